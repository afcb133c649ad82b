# CPACK_POST_BUILD_SCRIPTS (cmake/package.cmake): repairs the -dbgsym package CPack 3.25 writes.
# Its md5sums names the .debug file by its absolute path in CPack's staging dir, so dpkg --verify
# and debsums report it missing (and lintian says md5sums-lists-nonexistent-file); it also has no
# copyright or changelog. Repacked as debhelper makes dbgsym packages: the debug sections
# compressed (objcopy --compress-debug-sections: 121 MB installed becomes about 41 MB; gdb reads
# them), the file 0644, usr/share/doc/pacsnode-dbgsym -> pacsnode (it depends on that version),
# md5sums relative to the root and Installed-Size recomputed.
foreach(pkg IN LISTS CPACK_PACKAGE_FILES)
  if(NOT pkg MATCHES "\\.ddeb$")
    continue()
  endif()
  set(dir ${CPACK_TOPLEVEL_DIRECTORY}/dbgsym-repack)
  file(REMOVE_RECURSE ${dir})
  execute_process(COMMAND dpkg-deb -R ${pkg} ${dir} COMMAND_ERROR_IS_FATAL ANY)
  file(GLOB_RECURSE debug_files ${dir}/usr/lib/debug/*.debug)
  foreach(f IN LISTS debug_files)
    execute_process(COMMAND objcopy --compress-debug-sections ${f} COMMAND_ERROR_IS_FATAL ANY)
    file(CHMOD ${f} PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
  endforeach()
  file(MAKE_DIRECTORY ${dir}/usr/share/doc)
  file(CREATE_LINK ${CPACK_PACKAGE_NAME} ${dir}/usr/share/doc/${CPACK_PACKAGE_NAME}-dbgsym SYMBOLIC)
  execute_process(COMMAND sh -c "find usr -type f | LC_ALL=C sort | xargs md5sum > DEBIAN/md5sums"
                  WORKING_DIRECTORY ${dir} COMMAND_ERROR_IS_FATAL ANY)
  execute_process(COMMAND du -s -k --exclude=DEBIAN ${dir} OUTPUT_VARIABLE du COMMAND_ERROR_IS_FATAL ANY)
  string(REGEX MATCH "^[0-9]+" kib "${du}")
  file(READ ${dir}/DEBIAN/control control)
  string(REGEX REPLACE "Installed-Size: [0-9]+" "Installed-Size: ${kib}" control "${control}")
  file(WRITE ${dir}/DEBIAN/control "${control}")
  execute_process(COMMAND dpkg-deb --root-owner-group -Zgzip -b ${dir} ${pkg}
                  OUTPUT_QUIET COMMAND_ERROR_IS_FATAL ANY)
  file(REMOVE_RECURSE ${dir})
endforeach()
