# Runs a program and checks how it ended; CTest runs it with cmake -P.
#
#   -DPROG=program       what to run
#   -DARGS="a b"         its arguments, split at spaces
#   -DDIR=directory      where to run it (default: the current one)
#   -DSTATUS=0           the exit status it must end with (default 0)
#   -DEXPECT=file        its standard output must be exactly this file
#   -DMATCH_1=regex ...  MATCH_1 to MATCH_9: each must match the output
#   -DERR_MATCH=regex    must match its standard error
#
# CTest's own PASS_REGULAR_EXPRESSION ignores the exit status and passes
# when any one expression matches; these checks need all of them.
if(NOT DEFINED STATUS)
  set(STATUS 0)
endif()
if(NOT DEFINED DIR)
  set(DIR .)
endif()
separate_arguments(args UNIX_COMMAND "${ARGS}")
execute_process(COMMAND ${PROG} ${args}
                WORKING_DIRECTORY ${DIR}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
message("${out}")
if(NOT err STREQUAL "")
  message("stderr:\n${err}")
endif()

set(bad "")
if(NOT rc STREQUAL STATUS)
  string(APPEND bad "exit status ${rc}, want ${STATUS}\n")
endif()
if(DEFINED EXPECT)
  file(READ ${EXPECT} want)
  if(NOT out STREQUAL want)
    string(APPEND bad "the output is not the same as ${EXPECT}:\n${want}")
  endif()
endif()
foreach(i RANGE 1 9)
  if(DEFINED MATCH_${i} AND NOT out MATCHES "${MATCH_${i}}")
    string(APPEND bad "no line of the output matches: ${MATCH_${i}}\n")
  endif()
endforeach()
if(DEFINED ERR_MATCH AND NOT err MATCHES "${ERR_MATCH}")
  string(APPEND bad "stderr does not match: ${ERR_MATCH}\n")
endif()
if(NOT bad STREQUAL "")
  message(FATAL_ERROR "${bad}")
endif()
