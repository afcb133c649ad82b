#pragma once
// What the Storage SCP negotiates: the transfer syntaxes it accepts and the abstract syntaxes it
// takes. docs/conformance-statement.md states them and tests/unit/test_conformance_statement.cpp
// checks the two against each other; header-only, so that the test reads these very tables
// without linking the daemon's library.
#include <set>
#include <span>
#include <string>
#include <string_view>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcuid.h>

namespace scp {

// Transfer syntaxes accepted for storage, in order of preference when an SCU offers several in
// one presentation context: uncompressed first, so nobody is asked to compress for us.
inline std::span<const char* const> accepted_transfer_syntaxes() {
  static constexpr const char* kTransferSyntaxes[] = {
      UID_LittleEndianExplicitTransferSyntax, UID_LittleEndianImplicitTransferSyntax,
      UID_BigEndianExplicitTransferSyntax, UID_DeflatedExplicitVRLittleEndianTransferSyntax,
      UID_JPEGProcess14SV1TransferSyntax, UID_JPEGProcess14TransferSyntax,
      UID_JPEGLSLosslessTransferSyntax, UID_JPEG2000LosslessOnlyTransferSyntax, UID_RLELosslessTransferSyntax,
      UID_JPEGProcess1TransferSyntax, UID_JPEGProcess2_4TransferSyntax, UID_JPEGLSLossyTransferSyntax,
      UID_JPEG2000TransferSyntax, UID_JPEG2000Part2MulticomponentImageCompressionLosslessOnlyTransferSyntax,
      UID_JPEG2000Part2MulticomponentImageCompressionTransferSyntax,
      UID_MPEG2MainProfileAtMainLevelTransferSyntax, UID_MPEG2MainProfileAtHighLevelTransferSyntax,
      UID_MPEG4HighProfileLevel4_1TransferSyntax, UID_MPEG4BDcompatibleHighProfileLevel4_1TransferSyntax,
      UID_MPEG4HighProfileLevel4_2_For2DVideoTransferSyntax, UID_MPEG4HighProfileLevel4_2_For3DVideoTransferSyntax,
      UID_MPEG4StereoHighProfileLevel4_2TransferSyntax, UID_HEVCMainProfileLevel5_1TransferSyntax,
      UID_HEVCMain10ProfileLevel5_1TransferSyntax};
  return kTransferSyntaxes;
}

// Verification and every storage SOP class this DCMTK knows (dcmAllStorageSOPClassUIDs).
inline const std::set<std::string>& known_abstract_syntaxes() {
  static const std::set<std::string> known = [] {
    std::set<std::string> k{UID_VerificationSOPClass};
    for (int i = 0; i < numberOfDcmAllStorageSOPClassUIDs; ++i) k.insert(dcmAllStorageSOPClassUIDs[i]);
    return k;
  }();
  return known;
}

// Storage classes newer than this DCMTK (e.g. Label Map Segmentation) share the standard root.
inline constexpr std::string_view kStorageSopClassRoot = "1.2.840.10008.5.1.4.1.1.";

// An abstract syntax the SCP accepts: a known one, or any UID under kStorageSopClassRoot.
inline bool accepts_abstract_syntax(const std::string& uid) {
  return known_abstract_syntaxes().count(uid) || uid.rfind(kStorageSopClassRoot, 0) == 0;
}

}  // namespace scp
