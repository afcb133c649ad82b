#pragma once
// The interface of pacsnode-gdcm.so, the module that holds GDCM (dicom/gdcm_module/). GDCM builds
// its data dictionaries in static constructors when it is loaded, about 35 ms of every process
// start on our machines; only JPEG 2000 needs it (DCMTK has no decoder), so pixel_decoder.cpp
// loads the module the first time a JPEG 2000 frame is decoded, and no other process pays.
//
// A plain C interface: no exception and no C++ object crosses it.
#include <cstddef>

extern "C" {

// What GDCM decoded, before any pixel is written.
struct PacsnodeGdcmImage {
  int cols, rows, frames, bits_allocated, samples_per_pixel;
  unsigned long long buffer_length;  // bytes GDCM will write
};

// Returns a buffer of at least image->buffer_length bytes, or nullptr to stop the decode (the
// caller keeps its reason).
typedef void* (*PacsnodeGdcmAlloc)(void* context, const PacsnodeGdcmImage* image);

// Decodes the Part 10 file `part10` (`length` bytes) with GDCM's ImageReader. 0: decoded into the
// buffer `alloc` returned. 1: `alloc` returned nullptr. 2: GDCM failed; `error` holds why
// (NUL-terminated, at most error_size bytes).
typedef int (*PacsnodeGdcmDecode)(const char* part10, std::size_t length, PacsnodeGdcmAlloc alloc, void* context,
                                  char* error, std::size_t error_size);

// The module's one exported symbol; the version in its name changes with the interface.
#define PACSNODE_GDCM_DECODE_SYMBOL "pacsnode_gdcm_decode_v1"
int pacsnode_gdcm_decode_v1(const char* part10, std::size_t length, PacsnodeGdcmAlloc alloc, void* context,
                            char* error, std::size_t error_size);
}
