#include "scp/http_server.h"

#include <chrono>
#include <optional>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "dicom/log.h"

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using tcp = asio::ip::tcp;

namespace scp {

struct HttpServer::Impl {
  explicit Impl(const config::Config::Http& c) : cfg(c), acceptor(io) {}
  config::Config::Http cfg;
  std::atomic<int> active{0};
  std::unique_ptr<HttpApi> api;
  std::shared_ptr<spdlog::logger> log = pacsnode::component_logger("http");
  asio::io_context io;  // after everything the sessions use: destroying it destroys them first
  tcp::acceptor acceptor;
  std::thread thread;
  void accept();
};

namespace {

constexpr std::size_t kHeaderLimit = 16 * 1024;
constexpr std::size_t kBodyLimit = 64 * 1024;

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, HttpServer::Impl& server) : stream_(std::move(socket)), server_(server) { ++server_.active; }
  ~Session() { --server_.active; }
  void run() { read(); }

 private:
  void read() {
    parser_.emplace();
    parser_->header_limit(kHeaderLimit);
    parser_->body_limit(kBodyLimit);
    stream_.expires_after(std::chrono::seconds(server_.cfg.request_timeout_seconds));
    bhttp::async_read(stream_, buffer_, *parser_, beast::bind_front_handler(&Session::on_read, shared_from_this()));
  }

  void on_read(beast::error_code ec, std::size_t) {
    if (ec == bhttp::error::end_of_stream || ec == beast::error::timeout || ec == asio::error::operation_aborted ||
        ec == asio::error::connection_reset || ec == asio::error::eof)
      return close();
    if (ec) {
      // The request cannot be read whole: say why, then close (what follows is not a request).
      int status = 400;
      if (ec == bhttp::error::header_limit || ec == bhttp::error::buffer_overflow) status = 431;
      else if (ec == bhttp::error::body_limit) status = 413;
      else if (ec.category() != bhttp::make_error_code(bhttp::error::bad_method).category()) return close();
      HttpResponse r;
      r.status = status;
      r.body = nlohmann::json{{"error", status == 431   ? "request headers too large"
                                        : status == 413 ? "request body too large"
                                                        : "malformed request"}}
                   .dump() +
               "\n";
      return respond(r, false, 11);
    }
    const auto& rq = parser_->get();
    HttpRequest in;
    in.method = std::string(rq.method_string());
    in.target = std::string(rq.target());
    in.body = rq.body();
    in.authorization = std::string(rq[bhttp::field::authorization]);
    in.cookie = std::string(rq[bhttp::field::cookie]);
    in.action_header = std::string(rq["X-Pacsnode-Action"]);
    in.content_type = std::string(rq[bhttp::field::content_type]);
    HttpResponse out;
    try {
      out = server_.api->handle(in);
    } catch (const std::exception& e) {
      server_.log->error("http {} request failed: {}", in.method, e.what());
      out.status = 500;
      out.body = nlohmann::json{{"error", "internal error (see the node's log)"}}.dump() + "\n";
    }
    server_.log->debug("http {} {} -> {}", in.method, in.target.substr(0, 200), out.status);
    if (in.method == "HEAD") out.body.clear();
    respond(out, rq.keep_alive() && out.status < 400, rq.version());
  }

  void respond(const HttpResponse& r, bool keep_alive, unsigned version) {
    res_ = {};
    res_.version(version);
    res_.result(static_cast<unsigned>(r.status));
    res_.set(bhttp::field::server, "pacsnode");
    res_.set(bhttp::field::content_type, r.content_type);
    res_.set("X-Content-Type-Options", "nosniff");
    for (const auto& [k, v] : r.headers) res_.insert(k, v);
    res_.body() = r.body;
    res_.keep_alive(keep_alive);
    res_.prepare_payload();
    keep_alive_ = keep_alive;
    stream_.expires_after(std::chrono::seconds(30));
    bhttp::async_write(stream_, res_, beast::bind_front_handler(&Session::on_write, shared_from_this()));
  }

  void on_write(beast::error_code ec, std::size_t) {
    if (ec || !keep_alive_) return close();
    read();
  }

  void close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    stream_.socket().close(ec);
  }

  beast::tcp_stream stream_;
  HttpServer::Impl& server_;
  beast::flat_buffer buffer_{kHeaderLimit + kBodyLimit};  // its limit bounds a request's bytes in memory
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  bhttp::response<bhttp::string_body> res_;
  bool keep_alive_ = false;
};

}  // namespace

void HttpServer::Impl::accept() {
  acceptor.async_accept(asio::make_strand(io), [this](beast::error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !acceptor.is_open()) return;
    if (!ec) {
      if (active.load() >= cfg.max_connections) {
        beast::error_code ignore;
        socket.close(ignore);  // bounded: the client sees the connection closed, the node stays up
      } else {
        std::make_shared<Session>(std::move(socket), *this)->run();
      }
    }
    accept();
  });
}

HttpServer::HttpServer(const config::Config::Http& cfg) {
  if (!cfg.enabled) return;
  auto impl = std::make_unique<Impl>(cfg);
  beast::error_code ec;
  const auto address = asio::ip::make_address_v4(cfg.bind, ec);
  const tcp::endpoint ep(address, cfg.port);
  auto fail = [&](const char* what) {
    throw std::runtime_error(fmt::format("http: cannot {} {}:{}: {}", what, cfg.bind, cfg.port, ec.message()));
  };
  if (ec) fail("parse");
  impl->acceptor.open(ep.protocol(), ec);
  if (ec) fail("open a socket for");
  impl->acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  impl->acceptor.bind(ep, ec);
  if (ec) fail("bind");
  impl->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) fail("listen on");
  impl_ = std::move(impl);
}

HttpServer::~HttpServer() { stop(); }

std::uint16_t HttpServer::port() const {
  if (!impl_) return 0;
  beast::error_code ec;
  return impl_->acceptor.local_endpoint(ec).port();
}

void HttpServer::start(HttpSources sources) {
  if (!impl_ || impl_->thread.joinable()) return;
  impl_->api = std::make_unique<HttpApi>(impl_->cfg.token, std::move(sources));
  impl_->accept();
  impl_->thread = std::thread([this] { impl_->io.run(); });
  impl_->log->info("http listening on {}:{}", impl_->cfg.bind, port());
}

void HttpServer::stop() {
  if (!impl_) return;
  asio::post(impl_->io, [impl = impl_.get()] {
    beast::error_code ec;
    impl->acceptor.close(ec);
  });
  impl_->io.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
  impl_.reset();  // closes every connection (their handlers are destroyed with the io_context)
}

}  // namespace scp
