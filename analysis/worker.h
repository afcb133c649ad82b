#pragma once
// `pacsnode worker`: decodes and analyses one series in a short-lived child process.
//
// The daemon and `pacsnode analyze` never decode pixels themselves: bytes from the network or an
// analysed folder are hostile, and DCMTK's, GDCM's and OpenJPEG's decoders crash on crafted input.
// The parent (analysis/worker_client.h) starts `pacsnode worker` under resource limits, writes one
// Job as JSON on its standard input, and reads events, one JSON object per line, from file
// descriptor 3. A crash therefore costs one series; the parent records the signal or the limit.
//
// Events (in this order; "objects" and "series" once per volume of the series):
//   {"event": "started", "pid": N}
//   {"event": "rejected", "path": P, "reason": R, "files": [...]}     an input that was not used
//   {"event": "note", "text": T}                                     a split the decoder made
//   {"event": "volume", "key": K, "profile": NAME}                   about to analyse volume K
//   {"event": "objects", "key": K, "profile": NAME, "objects": [     SEG, SR (+ key images) are
//       {"kind": "SEG"|"SR"|"KEY", "path": ..., "sop_class_uid": ..., complete on disk: the daemon
//        "sop_instance_uid": ..., "series_uid": ..., "study_uid": ...}]}  queues them at once
//   {"event": "series", "summary": {...}}                            analysis::to_json(SeriesSummary),
//                                                                    after the preview; "error" set
//                                                                    when the volume failed
//   {"event": "done", "volumes": N, "analysed": A, "failed": F, "unmatched": U}
// and, instead of "done" when the worker cannot go on:
//   {"event": "fatal", "reason": R, "limit": "memory"|""}            exit code 3 (memory) or 1
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "dicom/sr_builder.h"

namespace analysis::worker {

// Exit code of a worker that ran out of address space (analysis.worker_memory_mb).
inline constexpr int kExitMemoryLimit = 3;

struct Job {
  std::vector<std::filesystem::path> files;  // the series' files (untrusted)
  std::string profile;                       // forced profile; empty: the first profile that matches
  std::string config_toml;                   // the config in force (profiles, limits); empty: the embedded default
  std::filesystem::path out_dir;             // SEG, SR and key images
  std::filesystem::path preview_dir;         // preview PNGs; empty: none
  bool write_dicom = true;
  bool keep_empty_frames = false;
  bool key_images = false;
  bool require_dicom = false;  // a volume whose SEG/SR cannot be written failed (daemon); else a note (analyze)
  std::optional<dicom::DocumentRef> replaces;  // the SR an earlier analysis wrote for this series
  std::vector<std::string> skip_keys;          // volumes whose objects an earlier attempt delivered
  // Where the SEG, SR and key images go: the series of the objects they supersede (a re-analysis
  // of a changed series), or new series; numbers from the parent. The n-th volume of the series
  // (split by phase, orientation, ...) takes instance_number + n - 1.
  dicom::SeriesPlacement seg, sr, key;
  // `pacsnode analyze` only. The feature options (the ibsi_* keys of a [[profile]] table as TOML,
  // config::parse_feature_overrides) applied over the profile that matched; empty: none.
  std::string feature_options_toml;
  // A mask given from outside instead of the profile's segmentation: a NIfTI, DICOM SEG or
  // RTSTRUCT file (analysis/roi_input.h), or with mask_next_to the one SEG/RTSTRUCT below that
  // folder that references the series. mask_label picks a label/segment/ROI number.
  std::filesystem::path mask;
  std::filesystem::path mask_next_to;
  std::optional<int> mask_label;
};

nlohmann::json to_json(const Job& job);
Job job_from_json(const nlohmann::json& j);  // throws nlohmann::json::exception on a malformed job

// The `pacsnode worker` command: reads the job from stdin, writes events to fd 3 (stdout when fd 3
// is not open, for a person trying it by hand). Returns the exit code.
int worker_main(const std::vector<std::string>& args);

}  // namespace analysis::worker
