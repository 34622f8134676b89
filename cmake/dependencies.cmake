# Debian packages only (scripts/install-deps.sh installs them).
find_package(Threads REQUIRED)
find_package(fmt REQUIRED)
find_package(nlohmann_json REQUIRED)
find_package(CLI11 REQUIRED)
if(TANDEM_WITH_MPI)
  find_package(MPI REQUIRED COMPONENTS CXX)
endif()

# LibTorch. Debian's TorchConfig.cmake pulls in Caffe2's; a plain imported
# target is simpler and links the same libraries.
find_path(TORCH_INCLUDE_DIR ATen/core/Tensor.h PATHS /usr/include REQUIRED)
find_library(TORCH_LIB torch REQUIRED)
find_library(TORCH_CPU_LIB torch_cpu REQUIRED)
find_library(C10_LIB c10 REQUIRED)
add_library(tandem_torch INTERFACE)
target_include_directories(tandem_torch SYSTEM INTERFACE ${TORCH_INCLUDE_DIR}
                                                         ${TORCH_INCLUDE_DIR}/torch/csrc/api/include)
target_link_libraries(tandem_torch INTERFACE ${TORCH_LIB} ${TORCH_CPU_LIB} ${C10_LIB})

# Gloo, through c10d's ProcessGroupGloo (which is compiled only with USE_C10D_GLOO).
find_library(GLOO_LIB gloo REQUIRED)
add_library(tandem_gloo INTERFACE)
target_link_libraries(tandem_gloo INTERFACE ${GLOO_LIB})
target_compile_definitions(tandem_gloo INTERFACE USE_C10D_GLOO=1)

# YAML config files (tandem train --config). yaml-cpp 0.7 (Debian bookworm)
# exports the imported target `yaml-cpp`; 0.8 names it `yaml-cpp::yaml-cpp`.
find_package(yaml-cpp REQUIRED)
add_library(tandem_yaml INTERFACE)
if(TARGET yaml-cpp::yaml-cpp)
  target_link_libraries(tandem_yaml INTERFACE yaml-cpp::yaml-cpp)
else()
  target_link_libraries(tandem_yaml INTERFACE yaml-cpp)
endif()

# Checksums and digests.
find_path(XXHASH_INCLUDE_DIR xxhash.h REQUIRED)
find_library(XXHASH_LIB xxhash REQUIRED)

# Images for detection (decode JPEG/PNG/BMP, resize, draw): OpenCV's core,
# imgproc and imgcodecs, linked PRIVATE so public headers never include it.
# Debian ships OpenCVConfig.cmake only in libopencv-dev, which pulls in every
# OpenCV module (VTK, Qt, ...); with only the three -dev packages installed,
# the headers and libraries are found directly.
find_package(OpenCV QUIET COMPONENTS core imgproc imgcodecs)
add_library(tandem_opencv INTERFACE)
if(OpenCV_FOUND)
  target_include_directories(tandem_opencv SYSTEM INTERFACE ${OpenCV_INCLUDE_DIRS})
  target_link_libraries(tandem_opencv INTERFACE ${OpenCV_LIBS})
else()
  find_path(OPENCV_INCLUDE_DIR opencv2/core.hpp PATH_SUFFIXES opencv4 REQUIRED)
  foreach(component core imgproc imgcodecs)
    find_library(OPENCV_${component}_LIB opencv_${component} REQUIRED)
    target_link_libraries(tandem_opencv INTERFACE ${OPENCV_${component}_LIB})
  endforeach()
  target_include_directories(tandem_opencv SYSTEM INTERFACE ${OPENCV_INCLUDE_DIR})
endif()

if(TANDEM_BUILD_TESTS)
  find_package(GTest REQUIRED)
endif()
