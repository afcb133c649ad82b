# Included by the install rules (CMakeLists.txt) at install time, when CMAKE_INSTALL_PREFIX is
# known: where the config and the systemd unit go for that prefix.
#   PACSNODE_BINDIR      <prefix>/bin
#   PACSNODE_SYSCONFDIR  /etc for the prefix /usr (GNUInstallDirs' rule, and what the Debian
#                        package has), else <prefix>/etc
#   PACSNODE_UNITDIR     /lib/systemd/system for /usr (Debian 12's systemdsystemunitdir), else
#                        <prefix>/lib/systemd/system
set(PACSNODE_BINDIR "${CMAKE_INSTALL_PREFIX}/bin")
if(CMAKE_INSTALL_PREFIX STREQUAL "/usr")
  set(PACSNODE_SYSCONFDIR /etc)
  set(PACSNODE_UNITDIR /lib/systemd/system)
else()
  set(PACSNODE_SYSCONFDIR "${CMAKE_INSTALL_PREFIX}/etc")
  set(PACSNODE_UNITDIR "${CMAKE_INSTALL_PREFIX}/lib/systemd/system")
endif()
