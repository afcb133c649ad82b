# Turns a text file into a C++ raw string literal include.
file(READ ${IN} CONTENT)
file(WRITE ${OUT} "R\"pacsnode_toml(${CONTENT})pacsnode_toml\"\n")
