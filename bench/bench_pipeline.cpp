// Benchmark of the ct-chest profile on a chest-like CT (bench/pipeline.sh makes a 300x512x512
// series with ../shared/tools/make_ct_phantom.py and runs the ITK and SciPy peers next to this).
//
// usage: bench_pipeline [--mode profile|lfl|all|codec] [--runs N] [--mask-out FILE] SERIES_DIR [OUT_DIR]
//
// One mode per process, so that "cold" means a process that has run nothing before:
// --mode profile: the whole profile: decode, preprocess (median 3x3), segment (body, lungs, bone),
//    features (IBSI on lungs and bone), classify, display (PNG preview); then SEG + SR, reported
//    separately; then, for scale, what faulting in a fresh mapping the size of the int16 volume
//    costs here. The peak RSS is the profile's.
// --mode lfl: the peers' steps, like for like: decode, median 3x3, threshold < -400 HU, 3D
//    components (6-connected, as scipy.ndimage.label's default and ITK's ConnectedComponent-
//    ImageFilter with FullyConnected off) with components touching the in-plane border dropped.
//    Twice: "cold" first thing in the process (every block freshly mapped and faulted in, as for a
//    study that arrives while the daemon is idle, or `pacsnode analyze` on one series), then
//    "reused" with the blocks the cold run freed (as for the next of several series in a row).
//    --mask-out writes the cold run's kept mask (raw uint8 0/1, slices in ascending position along
//    the slice normal, rows x columns row-major: the layout of bench/itk_peer), after its timing.
// --mode all: profile, then lfl in the same process (the old behaviour: its "cold" run is not cold
//    in the process sense, only after release_cached_planes()).
// --mode codec: the decode floor of a compressed series. Every file's codestream is read into
//    memory first (untimed), then decoded on all OpenCV threads (slices in parallel) by the codec
//    library itself: CharLS 2 (JPEG-LS) or OpenJPEG (JPEG 2000), called through their C APIs
//    (dlopen: Debian ships the libraries, not their headers). Next to it: GDCM's ImageReader on
//    each file (parse + the same codec + copy), our decode_stored (stored values, no conversion)
//    and the whole decode_folder. Best of RUNS (--runs), alternating; the blocks are reused, so
//    page faults are not in these figures.
// Machine-readable lines start with "@ " (key value); pipeline.sh turns them into ratios.
#include <dlfcn.h>
#include <fmt/format.h>
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <opencv2/core.hpp>
#include <string>

#include "analysis/kernels/preprocess.h"
#include "analysis/kernels/segment.h"
#include "analysis/pipeline.h"
#include "analysis/results.h"
#include "dicom/pixel_decoder.h"
#include "dicom/volume.h"

#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcpixel.h>
#include <dcmtk/dcmdata/dcpixseq.h>
#include <dcmtk/dcmdata/dcpxitem.h>
#include <dcmtk/dcmdata/dcxfer.h>
#include <gdcmImage.h>
#include <gdcmImageReader.h>

namespace fs = std::filesystem;
using namespace analysis;

namespace {

double peak_rss_mb() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss / 1024.0;  // Linux: kB
}

void emit(const std::string& key, double v) { std::printf("@ %s %.3f\n", key.c_str(), v); }

// The peer's steps on our side, each timed; keys "<prefix>.decode_ms" etc.
// Raw uint8 0/1 mask, slices in ascending position along the slice normal (bench/itk_peer's layout).
void write_mask(const Mask& mask, const dicom::Volume& v, const fs::path& path) {
  const auto along = [&](const dicom::Vec3& p) {
    return p[0] * v.geom.normal[0] + p[1] * v.geom.normal[1] + p[2] * v.geom.normal[2];
  };
  const bool ascending = v.sources.empty() || along(v.sources.back().position) >= along(v.sources.front().position);
  std::ofstream out(path, std::ios::binary);
  cv::Mat row01;
  for (std::size_t k = 0; k < mask.size(); ++k) {
    const cv::Mat& s = mask[ascending ? k : mask.size() - 1 - k];
    cv::min(s, 1, row01);  // 0/1 (select_components writes 1; be explicit)
    for (int r = 0; r < row01.rows; ++r) out.write(row01.ptr<char>(r), row01.cols);
  }
  if (!out) throw std::runtime_error("cannot write " + path.string());
}

void like_for_like(const fs::path& series, const std::string& prefix, const char* what,
                   const fs::path& mask_out = {}) {
  std::printf("\npeer's steps (ours), %s:\n", what);
  Stopwatch sw;
  StudyContext study = decode_folder(series);
  const double decode_ms = sw.ms();
  auto& slices = study.volumes.at(0).slices;
  sw = Stopwatch();
  kernels::median_filter(slices, 3);
  const double median_ms = sw.ms();
  sw = Stopwatch();
  Mask air = kernels::threshold(slices, {-1e30, -400.5});  // < -400 on integer HU
  const double threshold_ms = sw.ms();
  sw = Stopwatch();
  const auto comps = kernels::label_components(air, kernels::Connectivity::c6);
  std::vector<bool> keep(comps.count());
  for (std::size_t i = 0; i < comps.count(); ++i) keep[i] = !comps.components[i].touches_inplane_border;
  kernels::select_components(air, comps, keep);
  const double components_ms = sw.ms();
  const auto kept = kernels::count_nonzero(air);
  const double lung_ml = kept * study.volumes[0].voxel_volume_mm3() / 1000.0;
  std::printf(
      "  decode %.1f ms, median %.1f ms, threshold %.1f ms, components+border drop %.1f ms "
      "(%zu components, %zu voxels = %.1f ml kept)\n",
      decode_ms, median_ms, threshold_ms, components_ms, comps.count(), kept, lung_ml);
  emit(prefix + ".decode_ms", decode_ms);
  emit(prefix + ".median_ms", median_ms);
  emit(prefix + ".threshold_ms", threshold_ms);
  emit(prefix + ".components_ms", components_ms);
  emit(prefix + ".segment_ms", threshold_ms + components_ms);
  emit(prefix + ".total_ms", decode_ms + median_ms + threshold_ms + components_ms);
  emit(prefix + ".lung_ml", lung_ml);
  emit(prefix + ".components", static_cast<double>(comps.count()));
  emit(prefix + ".kept_voxels", static_cast<double>(kept));
  if (!mask_out.empty()) write_mask(air, study.volumes[0], mask_out);
}


// ---- --mode codec: the codecs' own decode time (see the header comment)

// The first fragment of each file's Pixel Data (one frame per file, one fragment per frame).
std::vector<std::vector<unsigned char>> read_codestreams(const std::vector<fs::path>& files, std::string& ts) {
  std::vector<std::vector<unsigned char>> out;
  for (const auto& f : files) {
    DcmFileFormat ff;
    if (ff.loadFile(f.c_str()).bad()) throw std::runtime_error("cannot read " + f.string());
    DcmDataset* ds = ff.getDataset();
    const E_TransferSyntax xfer = ds->getOriginalXfer();
    ts = DcmXfer(xfer).getXferID();
    DcmElement* e = nullptr;
    DcmPixelSequence* seq = nullptr;
    DcmPixelItem* item = nullptr;
    Uint8* bytes = nullptr;
    auto* px = ds->findAndGetElement(DCM_PixelData, e).good() ? dynamic_cast<DcmPixelData*>(e) : nullptr;
    if (px == nullptr || px->getEncapsulatedRepresentation(xfer, nullptr, seq).bad() || seq == nullptr ||
        seq->card() != 2 || seq->getItem(item, 1).bad() || item->getUint8Array(bytes).bad())
      throw std::runtime_error("not one encapsulated fragment: " + f.string());
    out.emplace_back(bytes, bytes + item->getLength());
  }
  return out;
}

void* need_symbol(void* lib, const char* name) {
  void* p = ::dlsym(lib, name);
  if (p == nullptr) throw std::runtime_error(std::string("missing symbol ") + name);
  return p;
}

// CharLS 2 C API (charls/charls_jpegls_decoder.h), declared here: Debian has no libcharls-dev here.
struct CharLs {
  void* lib = ::dlopen("libcharls.so.2", RTLD_NOW);
  using Create = void* (*)();
  using Destroy = void (*)(const void*);
  using SetSource = int (*)(void*, const void*, std::size_t);
  using ReadHeader = int (*)(void*);
  using DestSize = int (*)(const void*, std::uint32_t, std::size_t*);
  using Decode = int (*)(const void*, void*, std::size_t, std::uint32_t);
  Create create = nullptr;
  Destroy destroy = nullptr;
  SetSource set_source = nullptr;
  ReadHeader read_header = nullptr;
  DestSize dest_size = nullptr;
  Decode decode = nullptr;
  CharLs() {
    if (lib == nullptr) throw std::runtime_error("libcharls.so.2 not found");
    create = reinterpret_cast<Create>(need_symbol(lib, "charls_jpegls_decoder_create"));
    destroy = reinterpret_cast<Destroy>(need_symbol(lib, "charls_jpegls_decoder_destroy"));
    set_source = reinterpret_cast<SetSource>(need_symbol(lib, "charls_jpegls_decoder_set_source_buffer"));
    read_header = reinterpret_cast<ReadHeader>(need_symbol(lib, "charls_jpegls_decoder_read_header"));
    dest_size = reinterpret_cast<DestSize>(need_symbol(lib, "charls_jpegls_decoder_get_destination_size"));
    decode = reinterpret_cast<Decode>(need_symbol(lib, "charls_jpegls_decoder_decode_to_buffer"));
  }
  void run(const std::vector<unsigned char>& in, void* out, std::size_t out_bytes) const {
    void* d = create();
    std::size_t need = 0;
    const bool ok = set_source(d, in.data(), in.size()) == 0 && read_header(d) == 0 && dest_size(d, 0, &need) == 0 &&
                    need <= out_bytes && decode(d, out, need, 0) == 0;
    destroy(d);
    if (!ok) throw std::runtime_error("CharLS could not decode a frame");
  }
};

// OpenJPEG 2 C API (openjpeg.h), declared here: Debian has no libopenjp2-7-dev here. Only opaque
// handles; opj_dparameters_t is filled by the library's own defaults into a large enough buffer.
struct OpenJpeg {
  void* lib = ::dlopen("libopenjp2.so.7", RTLD_NOW);
  struct Source {
    const unsigned char* data;
    std::size_t size, pos;
  };
  using Create = void* (*)(int);
  using Defaults = void (*)(void*);
  using Setup = int (*)(void*, void*);
  using StreamCreate = void* (*)(std::size_t, int);
  using SetRead = void (*)(void*, std::size_t (*)(void*, std::size_t, void*));
  using SetSkip = void (*)(void*, std::int64_t (*)(std::int64_t, void*));
  using SetSeek = void (*)(void*, int (*)(std::int64_t, void*));
  using SetUser = void (*)(void*, void*, void (*)(void*));
  using SetLength = void (*)(void*, std::uint64_t);
  using ReadHeader = int (*)(void*, void*, void**);
  using Decode = int (*)(void*, void*, void*);
  using End = int (*)(void*, void*);
  using Free = void (*)(void*);
  Create create = nullptr;
  Defaults defaults = nullptr;
  Setup setup = nullptr;
  StreamCreate stream_create = nullptr;
  SetRead set_read = nullptr;
  SetSkip set_skip = nullptr;
  SetSeek set_seek = nullptr;
  SetUser set_user = nullptr;
  SetLength set_length = nullptr;
  ReadHeader read_header = nullptr;
  Decode decode = nullptr;
  End end = nullptr;
  Free image_destroy = nullptr, stream_destroy = nullptr, codec_destroy = nullptr;
  OpenJpeg() {
    if (lib == nullptr) throw std::runtime_error("libopenjp2.so.7 not found");
    create = reinterpret_cast<Create>(need_symbol(lib, "opj_create_decompress"));
    defaults = reinterpret_cast<Defaults>(need_symbol(lib, "opj_set_default_decoder_parameters"));
    setup = reinterpret_cast<Setup>(need_symbol(lib, "opj_setup_decoder"));
    stream_create = reinterpret_cast<StreamCreate>(need_symbol(lib, "opj_stream_create"));
    set_read = reinterpret_cast<SetRead>(need_symbol(lib, "opj_stream_set_read_function"));
    set_skip = reinterpret_cast<SetSkip>(need_symbol(lib, "opj_stream_set_skip_function"));
    set_seek = reinterpret_cast<SetSeek>(need_symbol(lib, "opj_stream_set_seek_function"));
    set_user = reinterpret_cast<SetUser>(need_symbol(lib, "opj_stream_set_user_data"));
    set_length = reinterpret_cast<SetLength>(need_symbol(lib, "opj_stream_set_user_data_length"));
    read_header = reinterpret_cast<ReadHeader>(need_symbol(lib, "opj_read_header"));
    decode = reinterpret_cast<Decode>(need_symbol(lib, "opj_decode"));
    end = reinterpret_cast<End>(need_symbol(lib, "opj_end_decompress"));
    image_destroy = reinterpret_cast<Free>(need_symbol(lib, "opj_image_destroy"));
    stream_destroy = reinterpret_cast<Free>(need_symbol(lib, "opj_stream_destroy"));
    codec_destroy = reinterpret_cast<Free>(need_symbol(lib, "opj_destroy_codec"));
  }
  static std::size_t read(void* buf, std::size_t n, void* user) {
    auto* s = static_cast<Source*>(user);
    if (s->pos >= s->size) return static_cast<std::size_t>(-1);
    n = std::min(n, s->size - s->pos);
    std::memcpy(buf, s->data + s->pos, n);
    s->pos += n;
    return n;
  }
  static std::int64_t skip(std::int64_t n, void* user) {
    auto* s = static_cast<Source*>(user);
    const auto to = std::clamp<std::int64_t>(static_cast<std::int64_t>(s->pos) + n, 0, static_cast<std::int64_t>(s->size));
    const std::int64_t moved = to - static_cast<std::int64_t>(s->pos);
    s->pos = static_cast<std::size_t>(to);
    return moved;
  }
  static int seek(std::int64_t to, void* user) {
    auto* s = static_cast<Source*>(user);
    if (to < 0 || to > static_cast<std::int64_t>(s->size)) return 0;
    s->pos = static_cast<std::size_t>(to);
    return 1;
  }
  // Decodes to OpenJPEG's own image (int32 per sample), as GDCM's codec does before it copies.
  void run(const std::vector<unsigned char>& in) const {
    Source src{in.data(), in.size(), 0};
    void* codec = create(in.size() > 1 && in[1] == 0x4F ? 0 /* OPJ_CODEC_J2K */ : 2 /* OPJ_CODEC_JP2 */);
    alignas(16) unsigned char params[1 << 16] = {};  // opj_dparameters_t is ~ 10 KiB
    defaults(params);
    void* stream = stream_create(1 << 20, 1);
    set_read(stream, &read);
    set_skip(stream, &skip);
    set_seek(stream, &seek);
    set_user(stream, &src, nullptr);
    set_length(stream, in.size());
    void* image = nullptr;
    const bool ok = setup(codec, params) && read_header(stream, codec, &image) && decode(codec, stream, image) &&
                    end(codec, stream);
    if (image != nullptr) image_destroy(image);
    stream_destroy(stream);
    codec_destroy(codec);
    if (!ok) throw std::runtime_error("OpenJPEG could not decode a frame");
  }
};

int codec_floor(const fs::path& series, int runs) {
  const auto files = files_below(series);
  std::string ts;
  const auto streams = read_codestreams(files, ts);
  const bool jls = ts == "1.2.840.10008.1.2.4.80" || ts == "1.2.840.10008.1.2.4.81";
  const bool j2k = ts == "1.2.840.10008.1.2.4.90" || ts == "1.2.840.10008.1.2.4.91";
  if (!jls && !j2k) throw std::runtime_error("codec mode: JPEG-LS or JPEG 2000 series only, got " + ts);
  std::size_t in_bytes = 0;
  for (const auto& s : streams) in_bytes += s.size();
  const int n = static_cast<int>(files.size());
  const std::size_t frame = std::size_t{512} * 512 * 2 * 2;  // room for a 512x512 16-bit frame (x2)
  std::vector<unsigned char> out(frame * static_cast<std::size_t>(n), 1);  // faulted in
  const auto each = [&](const std::function<void(int)>& f) {
    cv::parallel_for_(cv::Range(0, n), [&](const cv::Range& r) {
      for (int i = r.start; i < r.end; ++i) f(i);
    });
  };
  std::optional<CharLs> charls;
  std::optional<OpenJpeg> openjpeg;
  if (jls) charls.emplace();
  else openjpeg.emplace();
  std::printf("%d files, %s, %.1f MiB of codestreams, OpenCV threads %d\n", n, jls ? "JPEG-LS" : "JPEG 2000",
              in_bytes / 1048576.0, cv::getNumThreads());
  std::map<std::string, double> best;
  const auto time = [&](const std::string& key, const std::function<void()>& f) {
    const Stopwatch sw;
    f();
    const double ms = sw.ms();
    auto [it, fresh] = best.emplace(key, ms);
    if (!fresh) it->second = std::min(it->second, ms);
  };
  for (int run = 0; run < runs; ++run) {
    time("codec", [&] {
      each([&](int i) {
        const auto& s = streams[static_cast<std::size_t>(i)];
        if (jls) charls->run(s, out.data() + frame * i, frame);
        else openjpeg->run(s);
      });
    });
    time("gdcm", [&] {
      each([&](int i) {
        gdcm::ImageReader reader;
        reader.SetFileName(files[static_cast<std::size_t>(i)].c_str());
        if (!reader.Read() || reader.GetImage().GetBufferLength() > frame ||
            !reader.GetImage().GetBuffer(reinterpret_cast<char*>(out.data() + frame * i)))
          throw std::runtime_error("GDCM could not decode " + files[static_cast<std::size_t>(i)].string());
      });
    });
    time("ours_stored", [&] {
      each([&](int i) {
        dicom::decode_stored(files[static_cast<std::size_t>(i)], [&](const dicom::DecodedLayout& l) -> void* {
          if (l.bytes() > frame) throw std::runtime_error("frame too large");
          return out.data() + frame * i;
        });
      });
    });
    time("ours_decode_folder", [&] { decode_folder(series); });
  }
  std::printf("decode of %d slices on all threads, best of %d:\n", n, runs);
  const char* what = jls ? "CharLS 2 (libcharls.so.2) directly" : "OpenJPEG (libopenjp2.so.7) directly";
  std::printf("  %-44s %9.1f ms\n", what, best["codec"]);
  std::printf("  %-44s %9.1f ms\n", "GDCM ImageReader per file", best["gdcm"]);
  std::printf("  %-44s %9.1f ms\n", "ours: dicom::decode_stored per file", best["ours_stored"]);
  std::printf("  %-44s %9.1f ms\n", "ours: decode_folder (headers, plan, convert)", best["ours_decode_folder"]);
  for (const auto& [k, v] : best) emit("codec." + k + "_ms", v);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ct-chest profile and like-for-like steps on one CT series (bench/pipeline.sh)"};
  std::string mode = "all";
  int runs = 5;
  fs::path series, out = fs::temp_directory_path() / "pacsnode-bench-pipeline", mask_out;
  app.add_option("--mode", mode, "profile: whole profile + SEG/SR; lfl: like-for-like, cold then reused; all: both")
      ->check(CLI::IsMember({"profile", "lfl", "all", "codec"}))
      ->capture_default_str();
  app.add_option("--runs", runs, "codec: runs of each decoder (best is reported)")->capture_default_str();
  app.add_option("--mask-out", mask_out, "lfl: write the cold run's kept mask here (raw uint8, bench/itk_peer layout)");
  app.add_option("SERIES_DIR", series, "folder of one CT series")->required()->check(CLI::ExistingDirectory);
  app.add_option("OUT_DIR", out, "where SEG, SR and preview go")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  fs::create_directories(out);
  analysis::keep_freed_memory_for_reuse();  // as the worker and `pacsnode analyze` do

  std::printf("OpenCV threads: %d, CPUs: %d\n", cv::getNumThreads(), cv::getNumberOfCPUs());
  if (mode == "codec") return codec_floor(series, runs);
  if (mode == "lfl") {  // first thing in this process: cold is cold
    like_for_like(series, "lfl_cold", "cold: first run in a fresh process", mask_out);
    like_for_like(series, "lfl", "reused: blocks freed by the cold run");
    return 0;
  }

  // ---- 1. whole ct-chest profile
  double volume_mb = 0;
  {
    const Stopwatch total;
    StudyContext study = decode_folder(series);
    if (study.volumes.size() != 1) {
      std::fprintf(stderr, "expected one volume in %s, got %zu\n", series.c_str(), study.volumes.size());
      return 1;
    }
    const Pipeline pipeline;
    const Profile* profile = pipeline.select({}, "ct-chest");
    SeriesContext c;
    c.volume = std::move(study.volumes[0]);
    c.profile = profile;
    c.out_dir = out;
    const auto& v = c.volume;
    volume_mb = static_cast<double>(v.depth()) * v.rows() * v.cols() * 2 / (1024.0 * 1024.0);
    std::printf("volume: %d x %d x %d, type %s, int16 size %.1f MiB\n", v.depth(), v.rows(), v.cols(),
                v.slices.front().type() == CV_16S ? "CV_16S" : "other", volume_mb);
    pipeline.run(c);
    const double total_ms = total.ms();
    const double rss = peak_rss_mb();
    std::printf("\nct-chest profile (ours):\n");
    const double decode_ms = study.timings.front().ms;
    std::printf("  %-12s %9.1f ms\n", "decode", decode_ms);
    emit("profile.decode_ms", decode_ms);
    for (const auto& t : c.timings) {
      std::printf("  %-12s %9.1f ms\n", t.stage.c_str(), t.ms);
      emit("profile." + t.stage + "_ms", t.ms);
    }
    std::printf("  %-12s %9.1f ms\n", "total", total_ms);
    emit("profile.total_ms", total_ms);
    for (const auto& s : c.segments) {
      const auto get = [&](const char* k) {
        const auto it = s.features.find(k);
        return it == s.features.end() ? 0.0 : it->second;
      };
      std::printf("  segment %-10s %9.1f ml  mean %7.1f HU  LAA-950 %5.2f %%\n", s.name.c_str(), get("volume_ml"),
                  get("mean_hu"), get("laa950_percent"));
    }
    std::printf("  peak RSS %.1f MiB = %.2f x the int16 volume (target <= 3.00)\n", rss, rss / volume_mb);
    emit("profile.peak_rss_mb", rss);
    emit("volume_int16_mb", volume_mb);

    c.volume.slices.clear();  // as analyze does: the SEG needs labels, geometry and sources only
    c.volume.slices.shrink_to_fit();
    const Stopwatch segsr;
    const auto files = write_seg_and_sr(c, out);
    const double segsr_ms = segsr.ms();
    std::printf("  SEG + SR     %9.1f ms (%s, %s), peak RSS after %.1f MiB = %.2f x\n", segsr_ms,
                files.seg.filename().c_str(), files.sr.filename().c_str(), peak_rss_mb(), peak_rss_mb() / volume_mb);
    emit("seg_sr_ms", segsr_ms);
    emit("peak_rss_after_seg_sr_mb", peak_rss_mb());
  }

  // ---- 2. page-fault cost of a fresh mapping of the volume's size, on both threads
  {
    const Stopwatch sw;
    cv::Mat fresh(static_cast<int>(volume_mb * 8), 128 * 1024, CV_8U);  // volume_mb MiB, not yet touched
    cv::parallel_for_(cv::Range(0, fresh.rows), [&](const cv::Range& r) {
      for (int i = r.start; i < r.end; ++i)
        for (int c = 0; c < fresh.cols; c += 4096) fresh.at<uchar>(i, c) = 1;
    });
    std::printf("\nfaulting in %.0f MiB of fresh memory (2 threads): %.1f ms\n", volume_mb, sw.ms());
    emit("fault_volume_ms", sw.ms());
  }

  // ---- 3. (--mode all) the peers' steps after the profile: cold memory, then reused blocks
  if (mode == "all") {
    dicom::release_cached_planes();
    like_for_like(series, "lfl_cold", "cold memory: every block freshly mapped (after the profile)", mask_out);
    like_for_like(series, "lfl", "reused: blocks freed by the cold run");
  }
  return 0;
}
