#include "dicom/series_loader.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <unordered_map>

#include <fmt/format.h>

#include "dicom/check.h"
#include "dicom/decode_geometry.h"
#include "dicom/log.h"
#include "dicom/pixel_decoder.h"

namespace dicom {
namespace {

namespace fs = std::filesystem;

auto& log() {
  static auto l = pacsnode::component_logger("decode");
  return l;
}

bool starts_with(const std::string& s, const std::string& p) { return s.rfind(p, 0) == 0; }

bool is_integer(double v) { return std::isfinite(v) && v == std::floor(v) && std::abs(v) <= 65536; }

// A plane: frame `frame` (0-based) of instance `inst`.
struct FrameRef {
  std::size_t inst;
  int frame;
};

StoredFormat stored_format(const ImageHeader& h, int decoded_bits_allocated) {
  StoredFormat f;
  f.bits_allocated = decoded_bits_allocated;
  f.bits_stored = std::clamp(h.bits_stored > 0 ? h.bits_stored : decoded_bits_allocated, 1, decoded_bits_allocated);
  f.high_bit = h.high_bit;
  if (f.high_bit < f.bits_stored - 1 || f.high_bit >= decoded_bits_allocated) f.high_bit = f.bits_stored - 1;
  f.is_signed = h.is_signed;
  f.monochrome1 = h.photometric == "MONOCHROME1";
  return f;
}

StoredFormat stored_format(const ImageHeader& h, const DecodedLayout& l) {
  if (!l.is_float) return stored_format(h, l.bits_allocated);
  StoredFormat f;
  f.bits_allocated = f.bits_stored = l.bits_allocated;
  f.high_bit = l.bits_allocated - 1;
  f.is_float = true;
  return f;
}

RealMap real_map(const ImageHeader& h, const FrameHeader& f) {
  return {f.rescale_slope, f.rescale_intercept, h.modality_lut.get()};
}

class Loader {
 public:
  explicit Loader(ParallelFor parallel) : parallel_(std::move(parallel)) {}

  LoadResult run(const std::vector<fs::path>& files) {
    read_headers(files);
    std::map<std::string, std::vector<std::size_t>> series;
    for (std::size_t i = 0; i < headers_.size(); ++i) {
      const auto& h = headers_[i];
      series[h.series_uid.empty() ? "path:" + h.path : h.series_uid].push_back(i);
    }
    for (auto& [key, insts] : series) load_series(insts);
    log()->info("decode: {} files -> {} volumes, {} rejected", files.size(), out_.volumes.size(), out_.rejected.size());
    return std::move(out_);
  }

 private:
  void reject_file(const std::string& path, std::string reason) {
    log()->debug("decode: rejected {}: {}", path, reason);
    out_.rejected.push_back({path, std::move(reason), {path}});
  }

  void reject_frames(const std::vector<FrameRef>& frames, const std::string& reason) {
    std::set<std::string> paths;
    for (const auto& f : frames) paths.insert(headers_[f.inst].path);
    Rejected r;
    r.reason = reason;
    r.files.assign(paths.begin(), paths.end());
    if (r.files.size() == 1) {
      r.path = r.files.front();
      const auto& h = headers_[frames.front().inst];
      if (h.is_multiframe()) r.reason = fmt::format("{} frame(s) of {}: {}", frames.size(), h.number_of_frames, reason);
    } else {
      fs::path common = fs::path(r.files.front()).parent_path();
      for (const auto& p : r.files) {
        while (!common.empty() && !starts_with(fs::path(p).parent_path().string(), common.string()))
          common = common.parent_path();
      }
      r.path = common.string();
      r.reason = fmt::format("{} planes in {} files: {}", frames.size(), r.files.size(), reason);
    }
    log()->debug("decode: rejected {}: {}", r.path, r.reason);
    out_.rejected.push_back(std::move(r));
  }

  // body(i) for every i < n through the caller's ParallelFor, or one after another.
  void for_each(std::size_t n, const std::function<void(std::size_t)>& body) const {
    if (parallel_ && n > 1) {
      parallel_(n, body);
    } else {
      for (std::size_t i = 0; i < n; ++i) body(i);
    }
  }

  void read_headers(const std::vector<fs::path>& files) {
    std::vector<std::optional<ImageHeader>> read(files.size());
    std::vector<std::string> error(files.size());
    for_each(files.size(), [&](std::size_t i) {
      try {
        read[i] = read_image_header(files[i]);
      } catch (const std::exception& e) {
        error[i] = e.what();
      } catch (...) {
        error[i] = "unexpected error while reading the header";
      }
    });
    // In file order, so that which of two duplicates is kept does not depend on the threads.
    std::unordered_map<std::string, std::string> seen;  // SOP Instance UID -> path
    for (std::size_t i = 0; i < files.size(); ++i) {
      const std::string path = files[i].string();
      if (!read[i]) {
        reject_file(path, error[i]);
        continue;
      }
      ImageHeader& h = *read[i];
      if (auto why = screen_header(h); !why.empty()) {
        reject_file(path, why);
        continue;
      }
      if (!h.sop_instance_uid.empty()) {
        auto [it, fresh] = seen.emplace(h.sop_instance_uid, path);
        if (!fresh) {
          reject_file(path, "duplicate SOP Instance UID (same instance as " + it->second + ")");
          continue;
        }
      }
      headers_.push_back(std::move(h));
    }
  }

  void load_series(std::vector<std::size_t> insts) {
    // 2D images (no position/orientation) are single-slice volumes on their own.
    std::vector<FrameRef> spatial;
    for (auto i : insts) {
      const auto& h = headers_[i];
      const bool all_spatial = std::all_of(h.frames.begin(), h.frames.end(),
                                           [](const FrameHeader& f) { return f.position && f.orientation; });
      if (all_spatial) {
        for (int f = 0; f < static_cast<int>(h.frames.size()); ++f) spatial.push_back({i, f});
      } else if (h.frames.size() > 1) {
        reject_file(h.path, fmt::format("multi-frame image ({} frames) without a position for every frame (cine or "
                                        "temporal sequence); not a volume",
                                        h.frames.size()));
      } else {
        load_projection(i);
      }
    }
    // Plan, decode; a file that fails to decode is rejected and the series planned again without it
    // (each round removes a file, so this ends).
    while (!spatial.empty()) {
      std::vector<PlaneRef> planes;
      for (std::size_t id = 0; id < spatial.size(); ++id) planes.push_back(plane_ref(spatial[id], id));
      const PlanResult plan = plan_volumes(planes);
      std::vector<Volume> volumes;
      std::size_t failed = SIZE_MAX;
      std::string failure;
      for (const auto& vp : plan.volumes) {
        std::vector<FrameRef> frames;
        for (auto id : vp.ids) frames.push_back(spatial[id]);
        try {
          volumes.push_back(build_volume(frames, vp.geom));
        } catch (const std::exception& e) {
          std::tie(failed, failure) = std::pair{failing_inst_, std::string(e.what())};
          break;
        }
      }
      if (failed != SIZE_MAX) {
        reject_file(headers_[failed].path, "pixel data: " + failure);
        std::erase_if(spatial, [&](const FrameRef& f) { return f.inst == failed; });
        continue;
      }
      for (auto& v : volumes) out_.volumes.push_back(std::move(v));
      for (const auto& r : plan.rejected) {
        std::vector<FrameRef> frames;
        for (auto id : r.ids) frames.push_back(spatial[id]);
        reject_frames(frames, r.reason);
      }
      for (const auto& n : plan.notes) {
        log()->info("decode: series split: {}", n);
        out_.notes.push_back(n);
      }
      return;
    }
  }

  PlaneRef plane_ref(const FrameRef& fr, std::size_t id) const {
    const auto& h = headers_[fr.inst];
    const auto& f = h.frames[static_cast<std::size_t>(fr.frame)];
    PlaneRef p;
    p.id = id;
    p.position = *f.position;
    p.orientation = *f.orientation;
    if (f.pixel_spacing) {
      p.spacing_row = (*f.pixel_spacing)[0];
      p.spacing_col = (*f.pixel_spacing)[1];
    }
    p.rows = h.rows;
    p.cols = h.cols;
    p.frame_of_reference_uid = h.frame_of_reference_uid;
    p.temporal_key = f.temporal_key;
    p.thickness = h.spacing_between_slices > 0 ? h.spacing_between_slices : f.slice_thickness;
    return p;
  }

  SeriesInfo series_info(const ImageHeader& h, const FrameHeader& f) const {
    SeriesInfo s;
    s.modality = h.modality;
    s.body_part = h.body_part;
    s.series_description = h.series_description;
    s.protocol_name = h.protocol_name;
    s.study_uid = h.study_uid;
    s.series_uid = h.series_uid;
    s.frame_of_reference_uid = h.frame_of_reference_uid;
    s.photometric = h.photometric.empty() ? "MONOCHROME2" : h.photometric;
    if (h.modality == "CT" && f.has_rescale) {
      s.units = "HU";
    } else if (!f.rescale_type.empty()) {
      s.units = f.rescale_type;
    } else if (h.modality == "PT" && !h.pet_units.empty()) {
      s.units = h.pet_units;
    } else {
      s.units = "US";
    }
    return s;
  }

  SourceFrame source(const FrameRef& fr) const {
    const auto& h = headers_[fr.inst];
    const auto& f = h.frames[static_cast<std::size_t>(fr.frame)];
    return {h.sop_class_uid, h.sop_instance_uid, h.path, f.frame_number, f.position.value_or(Vec3{})};
  }

  void load_projection(std::size_t i) {
    const auto& h = headers_[i];
    const auto& f = h.frames.front();
    Geometry g;
    if (f.pixel_spacing) {
      g.spacing_row = (*f.pixel_spacing)[0];
      g.spacing_col = (*f.pixel_spacing)[1];
    }
    g.spacing_slice = f.slice_thickness > 0 ? f.slice_thickness : 1.0;
    g.has_frame_of_reference = false;
    try {
      out_.volumes.push_back(build_volume({{i, 0}}, g));
    } catch (const std::exception& e) {
      reject_file(h.path, std::string("pixel data: ") + e.what());
    }
  }

  // Decodes single-frame instance `inst` into `slot` (rows x cols, CV_16S or CV_32F). Returns
  // false when `slot` is int16 and a value does not fit.
  bool decode_single(std::size_t inst, cv::Mat& slot) {
    const auto& h = headers_[inst];
    std::vector<unsigned char> temp;
    bool in_place = false;
    const auto dst_for = [&](const DecodedLayout& l) -> void* {
      check_layout(h, l);
      if (l.bytes() <= slot.total() * slot.elemSize()) {
        in_place = true;
        return slot.data;
      }
      temp.resize(l.bytes());
      return temp.data();
    };
    // Native data that the header read located: one read, no second parse.
    const auto layout = h.native_pixels.length > 0 && !h.has_float_pixel_data
                            ? read_native(h.path, h.native_pixels, native_layout(h), dst_for)
                            : decode_stored(h.path, dst_for);
    return stored_to_real(in_place ? slot.data : temp.data(), stored_format(h, layout),
                          real_map(h, h.frames.front()), slot.data, slot.type() == CV_32F, slot.total());
  }

  static DecodedLayout native_layout(const ImageHeader& h) {
    DecodedLayout l;
    l.rows = h.rows;
    l.cols = h.cols;
    l.frames = static_cast<int>(h.frames.size());
    l.bits_allocated = h.bits_allocated;
    l.samples_per_pixel = h.samples_per_pixel;
    return l;
  }

  void check_layout(const ImageHeader& h, const DecodedLayout& l) const {
    if (l.rows != h.rows || l.cols != h.cols || l.frames != static_cast<int>(h.frames.size()) ||
        l.samples_per_pixel != 1)
      throw DicomError(fmt::format("decoded {}x{}x{} ({} samples) differs from header {}x{}x{}", l.rows, l.cols, l.frames,
                                   l.samples_per_pixel, h.rows, h.cols, h.frames.size()));
    // All frames of a file are stacked into one matrix of rows x frames rows (an int).
    if (static_cast<std::int64_t>(l.rows) * l.frames > std::numeric_limits<int>::max())
      throw DicomError(fmt::format("{} frames of {} rows are too many for one volume", l.frames, l.rows));
  }

  // All frames of multi-frame instance `inst`, converted, as (frames*rows) x cols; cached.
  const cv::Mat& decode_multi(std::size_t inst, bool want_int) {
    if (auto it = multi_.find(inst); it != multi_.end()) return it->second;
    const auto& h = headers_[inst];
    want_int = want_int && !h.has_float_pixel_data;
    const std::size_t npix = static_cast<std::size_t>(h.rows) * h.cols;
    for (bool as_float : {!want_int, true}) {
      cv::Mat buf;
      std::vector<unsigned char> temp;
      bool in_place = false;
      const auto layout = decode_stored(h.path, [&](const DecodedLayout& l) -> void* {
        check_layout(h, l);
        buf.create(h.rows * l.frames, h.cols, as_float ? CV_32F : CV_16S);
        if (l.bytes() <= buf.total() * buf.elemSize()) {
          in_place = true;
          return buf.data;
        }
        temp.resize(l.bytes());
        return temp.data();
      });
      const StoredFormat sf = stored_format(h, layout);
      const std::size_t raw_frame = npix * (layout.bits_allocated / 8);
      const std::size_t out_frame = npix * buf.elemSize();
      const unsigned char* raw = in_place ? buf.data : temp.data();
      bool ok = true;
      // In place the output grows (or keeps) its size: convert from the last frame backwards.
      for (std::size_t k = h.frames.size(); ok && k-- > 0;)
        ok = stored_to_real(raw + k * raw_frame, sf, real_map(h, h.frames[k]), buf.data + k * out_frame, as_float, npix);
      if (ok) return multi_.emplace(inst, std::move(buf)).first->second;
    }
    throw DicomError("values do not fit the output type");  // unreachable: float always fits
  }

  Volume build_volume(const std::vector<FrameRef>& frames, const Geometry& geom) {
    const auto& first = headers_[frames.front().inst];
    Volume v;
    v.info = series_info(first, first.frames[static_cast<std::size_t>(frames.front().frame)]);
    v.geom = geom;
    for (const auto& fr : frames) v.sources.push_back(source(fr));
    const bool want_int = std::all_of(frames.begin(), frames.end(), [&](const FrameRef& fr) {
      const auto& h = headers_[fr.inst];
      const auto& f = h.frames[static_cast<std::size_t>(fr.frame)];
      return !h.has_float_pixel_data && is_integer(f.rescale_slope) && is_integer(f.rescale_intercept);
    });
    const int rows = first.rows, cols = first.cols;
    std::size_t n_single = 0;
    for (const auto& fr : frames) n_single += headers_[fr.inst].is_multiframe() ? 0 : 1;

    for (bool as_float : {!want_int, true}) {
      v.slices.assign(frames.size(), cv::Mat());
      cv::Mat block;  // one allocation for the slices from single-frame files
      if (n_single > 0) block = allocate_planes(static_cast<int>(n_single), rows, cols, as_float ? CV_32F : CV_16S);
      std::vector<std::size_t> singles;  // slice index of each single-frame file, in block order
      for (std::size_t z = 0; z < frames.size(); ++z) {
        const auto& fr = frames[z];
        if (headers_[fr.inst].is_multiframe()) {
          failing_inst_ = fr.inst;
          const cv::Mat& all = decode_multi(fr.inst, !as_float);
          v.slices[z] = all.rowRange(fr.frame * rows, (fr.frame + 1) * rows);
        } else {
          const int k = static_cast<int>(singles.size());
          v.slices[z] = block.rowRange(k * rows, (k + 1) * rows);
          singles.push_back(z);
        }
      }
      // Single-frame files, each into its own rows of `block` (in parallel when the caller allows).
      enum class Outcome : unsigned char { ok, overflow, failed };
      std::vector<Outcome> outcome(singles.size(), Outcome::ok);
      std::vector<std::string> error(singles.size());
      for_each(singles.size(), [&](std::size_t k) {
        const std::size_t z = singles[k];
        try {
          prefault_rows(v.slices[z]);  // this thread's slot: the page faults are spread over the threads
          if (!decode_single(frames[z].inst, v.slices[z])) outcome[k] = Outcome::overflow;
        } catch (const std::exception& e) {
          outcome[k] = Outcome::failed;
          error[k] = e.what();
        } catch (...) {
          outcome[k] = Outcome::failed;
          error[k] = "unexpected error while decoding";
        }
      });
      for (std::size_t k = 0; k < singles.size(); ++k) {  // the first failure in slice order
        if (outcome[k] != Outcome::failed) continue;
        failing_inst_ = frames[singles[k]].inst;
        throw DicomError(error[k]);
      }
      if (std::find(outcome.begin(), outcome.end(), Outcome::overflow) != outcome.end())
        continue;  // an int16 overflow: decode again as float
      const bool mixed = std::any_of(v.slices.begin(), v.slices.end(),
                                     [&](const cv::Mat& m) { return m.type() != v.slices.front().type(); });
      if (mixed) {  // multi-frame sources of different types: the volume is float throughout
        for (auto& s : v.slices) {
          cv::Mat f;
          s.convertTo(f, CV_32F);
          s = f;
        }
      }
      return v;
    }
    throw DicomError("values do not fit the output type");  // unreachable
  }

  ParallelFor parallel_;
  std::vector<ImageHeader> headers_;
  std::map<std::size_t, cv::Mat> multi_;
  std::size_t failing_inst_ = 0;
  LoadResult out_;
};

}  // namespace

std::string screen_header(const ImageHeader& h) {
  const std::string what = h.modality.empty() ? h.sop_class_uid : h.modality;
  if (h.modality == "SEG" || starts_with(h.sop_class_uid, "1.2.840.10008.5.1.4.1.1.66."))
    return "segmentation object, not an image to analyse";
  if (!h.has_pixel_data && !h.has_float_pixel_data)
    return fmt::format("no pixel data ({})", what.empty() ? "unknown object" : what);
  if (h.samples_per_pixel != 1 || (!h.photometric.empty() && h.photometric != "MONOCHROME1" &&
                                   h.photometric != "MONOCHROME2"))
    return fmt::format("colour image ({}, {} samples per pixel): only greyscale images are analysed",
                       h.photometric.empty() ? "no photometric interpretation" : h.photometric, h.samples_per_pixel);
  if (!h.problem.empty()) return h.problem;
  if (h.rows <= 0 || h.cols <= 0) return fmt::format("invalid image size {}x{}", h.rows, h.cols);
  if (h.frames.empty()) return "no frames";
  if (!h.has_float_pixel_data && h.bits_allocated != 8 && h.bits_allocated != 16 && h.bits_allocated != 32)
    return fmt::format("Bits Allocated {} is not supported", h.bits_allocated);
  for (const auto& f : h.frames) {
    if (!std::isfinite(f.rescale_slope) || f.rescale_slope == 0 || !std::isfinite(f.rescale_intercept))
      return fmt::format("invalid Rescale Slope/Intercept {}/{}", f.rescale_slope, f.rescale_intercept);
  }
  return {};
}

LoadResult load_files(const std::vector<std::filesystem::path>& files, const ParallelFor& parallel) {
  return Loader(parallel).run(files);
}

LoadResult load_folder(const std::filesystem::path& dir, const ParallelFor& parallel) {
  std::vector<fs::path> files;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec), end;
       !ec && it != end; it.increment(ec)) {
    if (it->is_regular_file(ec)) files.push_back(it->path());
  }
  if (ec) {
    LoadResult r;
    r.rejected.push_back({dir.string(), "cannot list folder: " + ec.message(), {dir.string()}});
    return r;
  }
  std::sort(files.begin(), files.end());
  return load_files(files, parallel);
}

}  // namespace dicom
