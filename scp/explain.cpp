#include "scp/explain.h"

#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <ostream>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "analysis/profiles_config.h"
#include "analysis/rules.h"
#include "dicom/instance_header.h"
#include "scp/commands.h"

namespace fs = std::filesystem;

namespace scp {

std::size_t explain(const fs::path& input, const config::Config& cfg, const ExplainOptions& opt, std::ostream& out,
                    std::ostream& err) {
  std::vector<fs::path> files;
  if (fs::is_directory(input)) {
    std::error_code ec;
    for (fs::recursive_directory_iterator it(input, fs::directory_options::skip_permission_denied, ec), end;
         !ec && it != end; it.increment(ec))
      if (it->is_regular_file(ec)) files.push_back(it->path());
    std::sort(files.begin(), files.end());
  } else {
    files.push_back(input);
  }
  struct Series {
    analysis::SeriesFacts facts;
    std::string study_uid;
    std::size_t instances = 0;
  };
  std::map<std::string, Series> series;  // by Series Instance UID
  std::vector<std::string> order;
  for (const auto& f : files) {
    dicom::InstanceHeader h;
    try {
      h = dicom::read_instance_header(f);
    } catch (const std::exception& e) {
      err << "skipped " << f.string() << ": " << e.what() << "\n";
      continue;
    }
    auto [it, fresh] = series.try_emplace(h.series_uid);
    Series& s = it->second;
    if (fresh) {
      order.push_back(h.series_uid);
      s.facts = {h.modality, h.body_part, h.series_description, h.protocol_name, h.study_description, h.sop_class_uid,
                 opt.calling_ae, 0};
      s.study_uid = h.study_uid;
    }
    s.facts.images += static_cast<int>(h.frames);
    ++s.instances;
  }
  const auto profiles = analysis::profiles_from(cfg);
  for (const auto& uid : order) {
    const Series& s = series.at(uid);
    const auto d = analysis::decide(cfg, profiles, s.facts);
    out << fmt::format("series {}\n", uid);
    out << fmt::format("  {} instance(s), {} image(s); modality {}; body part '{}'; series description '{}'; protocol '{}'; "
                       "study description '{}'; SOP class {}\n",
                       s.instances, s.facts.images, s.facts.modality, s.facts.body_part, s.facts.series_description,
                       s.facts.protocol_name, s.facts.study_description, s.facts.sop_class_uid);
    out << (d.analyse ? fmt::format("  -> analyse with profile {}: {}\n", d.profile, d.why)
                      : fmt::format("  -> not analysed: {}\n", d.why));
  }
  return order.size();
}

cli::Command explain_command() {
  return {"explain", "which [[rule]] and profile each series of a file or folder would get, and why",
          [](CLI::App& app) {
            struct Options {
              std::string input;
              std::optional<fs::path> config;
              ExplainOptions explain;
            };
            auto o = std::make_shared<Options>();
            app.add_option("FILE_OR_FOLDER", o->input, "DICOM file, or folder (any layout)")->required()->type_name("");
            app.add_option("--config", o->config, "config whose rules to apply (default: see below)")->type_name("FILE");
            app.add_option("--calling-ae", o->explain.calling_ae, "as if sent by this AE title (rules with calling_ae)")
                ->type_name("AE");
            app.footer("Reads the headers only (after the bounded structural scan): nothing is decoded or analysed.\n" +
                       std::string(kConfigNote));
            return cli::Action([o] {
              const AdminConfig ac = admin_config(o->config);
              try {
                analysis::profiles_from(ac.config);
              } catch (const config::ConfigError& e) {
                print_config_error(e);
                return cli::kExitUsage;
              }
              if (!fs::exists(o->input)) {
                std::cerr << "pacsnode explain: " << o->input << " does not exist\n";
                return cli::kExitFailure;
              }
              return explain(o->input, ac.config, o->explain, std::cout, std::cerr) > 0 ? cli::kExitOk : cli::kExitFailure;
            });
          }};
}

}  // namespace scp
