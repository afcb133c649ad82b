#pragma once
// The embedded HTTP server ([http] in the config, issue 11): Boost.Beast on an io_context and a
// thread of its own, so that an index query for a page never holds the daemon's timers. What it
// answers is scp/http_api.h.
//
// Bounded against slow or hostile clients: at most http.max_connections at once (more are closed
// at once), a whole request within http.request_timeout_seconds (also the keep-alive idle time),
// headers up to 16 KiB (else 431), bodies up to 64 KiB (else 413), malformed requests get 400 with
// a JSON error body and the connection is closed.
#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>

#include "config/config.h"
#include "scp/http_api.h"

namespace scp {

class HttpServer {
 public:
  // Binds and listens when cfg.enabled (throws std::runtime_error naming the address), so that a
  // port in use stops the start before anything else runs. Serves nothing until start().
  explicit HttpServer(const config::Config::Http& cfg);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Serves the API on the server's own thread (nothing when disabled).
  void start(HttpSources sources);
  // Closes the listening socket and every connection, joins the thread.
  void stop();
  bool enabled() const { return impl_ != nullptr; }
  std::uint16_t port() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace scp
