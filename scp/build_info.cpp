#include "scp/build_info.h"

#include <dcmtk/config/osconfig.h>  // before any other DCMTK header
#include <dcmtk/dcmdata/dcuid.h>    // OFFIS_DCMTK_VERSION_STRING
#include <gdcmConfigure.h>          // GDCM_VERSION
#include <opencv2/core/version.hpp> // CV_VERSION

namespace scp {

std::string version_text() {
  return std::string(PACSNODE_VERSION) + "\ncommit " + git_commit() + "\nDCMTK " OFFIS_DCMTK_VERSION_STRING
         "\nGDCM " GDCM_VERSION "\nOpenCV " CV_VERSION;
}

}  // namespace scp
