#pragma once
// What `pacsnode --version` prints: the version, the commit the binary was built from and the
// DCMTK, GDCM and OpenCV versions it was compiled against. Part of the pacsnode executable only
// (scp/CMakeLists.txt keeps build_info.cpp out of pacsnode_scp); the library versions are the
// headers' macros, so no GDCM or OpenCV symbol is referenced for them.
#include <string>

namespace scp {

// The short commit hash, with "-dirty" when the checkout had uncommitted changes, or "unknown"
// when built outside git. Generated at build time by cmake/git_commit.cmake.
const char* git_commit();

// "0.1.0\ncommit 1a2b3c4\nDCMTK 3.6.7\nGDCM 3.0.21\nOpenCV 4.6.0": what follows "pacsnode " in
// `pacsnode --version`, the project version on the first line.
std::string version_text();

}  // namespace scp
