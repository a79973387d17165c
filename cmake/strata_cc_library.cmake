# strata_cc_library(NAME name SRCS ... DEPS ...)
# One static library per engine module, after abseil's absl_cc_library. DEPS lists exactly the
# modules DESIGN.md allows, so a forbidden dependency fails to link.
function(strata_cc_library)
  cmake_parse_arguments(SCL "" "NAME" "SRCS;DEPS" ${ARGN})
  add_library(strata_${SCL_NAME} STATIC ${SCL_SRCS})
  target_include_directories(strata_${SCL_NAME} PUBLIC
    ${PROJECT_SOURCE_DIR}/engine/include ${PROJECT_SOURCE_DIR}/engine)
  target_link_libraries(strata_${SCL_NAME} PUBLIC ${SCL_DEPS})
endfunction()
