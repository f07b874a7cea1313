# Turns the Lua modules under lua/ into one C file, so that the nshost
# library carries them and runs from any directory.
# Inputs: OUT (the C file to write), SOURCES (a list of .lua files).
set(body "")
set(table "")
foreach(src IN LISTS SOURCES)
  get_filename_component(name "${src}" NAME_WE)
  file(READ "${src}" hex HEX)
  string(LENGTH "${hex}" hexlen)
  math(EXPR len "${hexlen} / 2")
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
  string(APPEND body
    "static const char src_${name}[] = {${bytes} 0};\n")
  string(APPEND table "  { \"${name}\", src_${name}, ${len} },\n")
endforeach()
file(WRITE "${OUT}.tmp"
  "/* Generated from lua/ by cmake/embed_lua.cmake; do not edit. */\n"
  "#include <stddef.h>\n"
  "struct nsh_lua_source { const char *name; const char *code; "
  "size_t len; };\n"
  "${body}"
  "extern const struct nsh_lua_source nsh_lua_sources[];\n"
  "const struct nsh_lua_source nsh_lua_sources[] = {\n${table}"
  "  { NULL, NULL, 0 }\n};\n")
execute_process(COMMAND ${CMAKE_COMMAND} -E copy_if_different
                "${OUT}.tmp" "${OUT}")
