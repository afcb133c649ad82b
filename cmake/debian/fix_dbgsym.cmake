# CPACK_POST_BUILD_SCRIPTS (cmake/package.cmake): repairs the -dbgsym package CPack 3.25 writes.
# Its md5sums names the .debug file by its absolute path in CPack's staging dir, so dpkg --verify
# and debsums report it missing (and lintian says md5sums-lists-nonexistent-file); it also has no
# copyright or changelog. Repacked with md5sums relative to the root and, as debhelper does for
# its dbgsym packages, usr/share/doc/pacsnode-dbgsym -> pacsnode (it depends on that version).
foreach(pkg IN LISTS CPACK_PACKAGE_FILES)
  if(NOT pkg MATCHES "\\.ddeb$")
    continue()
  endif()
  set(dir ${CPACK_TOPLEVEL_DIRECTORY}/dbgsym-repack)
  file(REMOVE_RECURSE ${dir})
  execute_process(COMMAND dpkg-deb -R ${pkg} ${dir} COMMAND_ERROR_IS_FATAL ANY)
  file(MAKE_DIRECTORY ${dir}/usr/share/doc)
  file(CREATE_LINK ${CPACK_PACKAGE_NAME} ${dir}/usr/share/doc/${CPACK_PACKAGE_NAME}-dbgsym SYMBOLIC)
  execute_process(COMMAND sh -c "find usr -type f | LC_ALL=C sort | xargs md5sum > DEBIAN/md5sums"
                  WORKING_DIRECTORY ${dir} COMMAND_ERROR_IS_FATAL ANY)
  execute_process(COMMAND dpkg-deb --root-owner-group -Zgzip -b ${dir} ${pkg}
                  OUTPUT_QUIET COMMAND_ERROR_IS_FATAL ANY)
  file(REMOVE_RECURSE ${dir})
endforeach()
