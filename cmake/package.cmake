# The Debian package, with CPack's DEB generator. In a RelWithDebInfo build dir:
#   cpack -G DEB      pacsnode_<version>-<revision>_amd64.deb and pacsnode-dbgsym_..._amd64.ddeb
# The package holds /usr/bin/pacsnode (stripped; its debug info is in the -dbgsym package), the
# unit /lib/systemd/system/pacsnode.service, the documented default config as the conffile
# /etc/pacsnode/pacsnode.toml, README, changelog.Debian.gz and copyright in /usr/share/doc/pacsnode,
# and the man page pacsnode(1). No maintainer scripts: the unit's user is dynamic
# (DynamicUser=yes), and the admin enables the service once the config is edited (README,
# "Running as a service").
# tests/scripts/check_package.sh builds, lints and installs it (CTest: test_package).

# What only the package installs (component deb, not part of a plain `cmake --install`). /etc is
# absolute: the package's prefix is /usr, whose config lives in /etc (cmake/install_dirs.cmake).
set(PACSNODE_DEB_DIR ${PROJECT_SOURCE_DIR}/cmake/debian)
install(FILES config/pacsnode.toml DESTINATION /etc/pacsnode COMPONENT deb EXCLUDE_FROM_ALL)
# Debian wants the changelog compressed with gzip -9n (no name or time stamp: reproducible).
set(PACSNODE_DEB_CHANGELOG_GZ ${PROJECT_BINARY_DIR}/changelog.Debian.gz)
add_custom_command(OUTPUT ${PACSNODE_DEB_CHANGELOG_GZ}
  COMMAND gzip -9n -c ${PACSNODE_DEB_DIR}/changelog > ${PACSNODE_DEB_CHANGELOG_GZ}
  DEPENDS ${PACSNODE_DEB_DIR}/changelog
  COMMENT "changelog.Debian.gz")
add_custom_target(pacsnode_deb_changelog ALL DEPENDS ${PACSNODE_DEB_CHANGELOG_GZ})
install(FILES ${PACSNODE_DEB_CHANGELOG_GZ} ${PACSNODE_DEB_DIR}/copyright
  DESTINATION ${CMAKE_INSTALL_DOCDIR} COMPONENT deb EXCLUDE_FROM_ALL)

# The man page, help2man's rendering of `pacsnode --help` (the commands and exit codes; every
# command's own --help has its options). Only the package installs it.
find_program(PACSNODE_HELP2MAN help2man)
if(PACSNODE_HELP2MAN)
  set(PACSNODE_MAN_GZ ${PROJECT_BINARY_DIR}/pacsnode.1.gz)
  add_custom_command(OUTPUT ${PACSNODE_MAN_GZ}
    COMMAND ${PACSNODE_HELP2MAN} -N --no-discard-stderr -s 1 --version-string "pacsnode ${PROJECT_VERSION}"
            -n "receives DICOM studies, analyses them and returns the results to the PACS"
            -o ${PROJECT_BINARY_DIR}/pacsnode.1 $<TARGET_FILE:pacsnode>
    COMMAND gzip -9nf ${PROJECT_BINARY_DIR}/pacsnode.1
    DEPENDS pacsnode
    COMMENT "pacsnode.1.gz (help2man)")
  add_custom_target(pacsnode_man ALL DEPENDS ${PACSNODE_MAN_GZ})
  install(FILES ${PACSNODE_MAN_GZ} DESTINATION ${CMAKE_INSTALL_MANDIR}/man1 COMPONENT deb EXCLUDE_FROM_ALL)
else()
  install(CODE "message(FATAL_ERROR \"The Debian package needs help2man for its man page (apt-get install help2man); re-run cmake after installing it.\")"
          COMPONENT deb EXCLUDE_FROM_ALL)
endif()

# The package is the default component (binary, unit, README) plus deb, without example_config.
# (cpack runs the build's preinstall target once per entry: about 15 s each on a built tree.)
set(CPACK_INSTALL_CMAKE_PROJECTS
  "${PROJECT_BINARY_DIR};${PROJECT_NAME};Unspecified;/"
  "${PROJECT_BINARY_DIR};${PROJECT_NAME};deb;/")
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME ${PROJECT_NAME})
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
# Debian revision: the upstream version is project()'s; a new upstream version starts again at 1.
# cmake/debian/changelog's first entry must name <version>-<revision> (check_package.sh checks).
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_INSTALL_PREFIX /usr)  # the prefix CPACK_SET_DESTDIR installs to
set(CPACK_SET_DESTDIR ON)  # installs with DESTDIR and the real prefix, so /etc stays /etc
set(CPACK_PACKAGE_CONTACT "pacsnode maintainers <maintainers@users.noreply.b-seed-36857f42.example>")
set(CPACK_DEBIAN_PACKAGE_SECTION science)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "DICOM node that analyses studies and returns the results to the PACS")
set(CPACK_PACKAGE_DESCRIPTION "\
pacsnode receives studies from modalities and the PACS as a DICOM Storage SCP,
stores them durably, decides when each study is complete, analyses it
(segmentation, IBSI features, classification) in a separate worker process, and
sends the results back to the PACS as DICOM Segmentation and TID 1500
Measurement Report objects.

The service (pacsnode.service, Type=notify, hardened, dynamic user) is
installed but not enabled: edit /etc/pacsnode/pacsnode.toml, then enable it.")
# Depends from the ELF files' shared libraries (dpkg-shlibdeps, from dpkg-dev), after libpq5, which
# the binary loads with dlopen (scp/index_pg.cpp) and dpkg-shlibdeps therefore cannot see.
set(CPACK_DEBIAN_PACKAGE_DEPENDS "libpq5")
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# The debug info goes to pacsnode-dbgsym (.ddeb), keyed by build ID, and the packaged binary is
# stripped by that step. CPACK_STRIP_FILES must stay off: it would strip before the split, and
# no -dbgsym package would be made (CPackDeb documents the two as exclusive).
set(CPACK_DEBIAN_DEBUGINFO_PACKAGE ON)
set(CPACK_POST_BUILD_SCRIPTS ${PACSNODE_DEB_DIR}/fix_dbgsym.cmake)  # CPack 3.25's md5sums of it
if(NOT CMAKE_BUILD_TYPE MATCHES "^(RelWithDebInfo|Debug)$")
  message(STATUS "Package: build type ${CMAKE_BUILD_TYPE} has no debug info, so cpack makes no -dbgsym package")
endif()
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA ${PACSNODE_DEB_DIR}/conffiles)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
