#include "scp/acceptor.h"

#include <fcntl.h>
#include <sys/socket.h>

#include <algorithm>
#include <cctype>

#include <boost/asio/post.hpp>
#include <fmt/format.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "dicom/log.h"
#include "dicom/tls.h"

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using boost::system::error_code;

namespace scp {
namespace {

constexpr std::size_t kPduHeader = 6;
constexpr std::uint8_t kAssociateRq = 0x01;

// What the first byte of something that is not DICOM suggests, for the log.
std::string describe_pdu_type(std::uint8_t t) {
  if (t == 0x16) return "0x16 (a TLS handshake?)";
  if (std::isprint(t)) return fmt::format("0x{:02x} ('{}': text, HTTP?)", t, static_cast<char>(t));
  return fmt::format("0x{:02x}", t);
}

std::uint32_t big_endian_32(const std::uint8_t* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | p[3];
}

bool peer_went_away(const error_code& ec) {
  return ec == asio::error::eof || ec == asio::error::connection_reset || ec == asio::error::connection_aborted ||
         ec == asio::error::broken_pipe;
}

}  // namespace

void SslFree::operator()(ssl_st* ssl) const { SSL_free(ssl); }

struct Acceptor::Pending {
  Pending(tcp::socket s, std::string from) : socket(std::move(s)), timer(socket.get_executor()), peer(std::move(from)) {}
  tcp::socket socket;
  asio::steady_timer timer;
  std::string peer;
  std::vector<std::uint8_t> buf = std::vector<std::uint8_t>(kPduHeader);
  std::size_t received = 0;        // bytes of buf filled
  std::size_t expected = 0;        // the whole PDU, once the header is in
  bool header_done = false;
  bool finished = false;           // completed or closed: late handlers do nothing
  SslPtr ssl;                      // DICOM over TLS: the session (after `socket` in the declaration: freed first)
  bool handshake_done = false;
  std::string tls_subject;
};

Acceptor::Acceptor(int listen_fd, AcceptorLimits limits, ReasonCounters<Rejection>& rejections, PeerLog& log,
                   Handler on_request, ssl_ctx_st* tls)
    : limits_(limits),
      rejections_(rejections),
      log_(log),
      on_request_(std::move(on_request)),
      tls_(tls),
      acceptor_(io_),
      retry_timer_(io_),
      flush_timer_(io_) {
  acceptor_.assign(tcp::v4(), listen_fd);
}

Acceptor::~Acceptor() { stop(); }

void Acceptor::start() {
  accept_next();
  schedule_flush();
  thread_ = std::thread([this] {
    for (;;) {
      try {
        io_.run();
        return;
      } catch (const std::exception& e) {  // a handler must not end the acceptor
        pacsnode::component_logger("scp")->error("acceptor: {}", e.what());
      }
    }
  });
}

void Acceptor::stop() {
  if (!thread_.joinable()) return;
  asio::post(io_, [this] {
    stopping_ = true;
    error_code ec;
    acceptor_.close(ec);
    retry_timer_.cancel();
    flush_timer_.cancel();
    const std::vector<std::shared_ptr<Pending>> waiting(pending_.begin(), pending_.end());
    for (const auto& p : waiting) {
      p->finished = true;
      p->timer.cancel();
      p->socket.close(ec);
      forget(p);
    }
  });
  thread_.join();  // returns once every cancelled handler has run
}

void Acceptor::schedule_flush() {
  flush_timer_.expires_after(std::chrono::seconds(1));
  flush_timer_.async_wait([this](error_code ec) {
    if (ec || stopping_) return;
    log_.flush();
    schedule_flush();
  });
}

void Acceptor::accept_next() {
  acceptor_.async_accept([this](error_code ec, tcp::socket socket) {
    if (stopping_ || ec == asio::error::operation_aborted) return;
    if (ec) {
      // Out of descriptors or memory: accepting again at once would spin. The backlog holds the
      // connections meanwhile.
      const bool resources = ec == asio::error::no_descriptors || ec == asio::error::no_buffer_space ||
                             ec == asio::error::no_memory || ec.value() == ENFILE;
      log_.log(spdlog::level::err, "-", "accept", fmt::format("cannot accept a connection: {}", ec.message()));
      if (resources) {
        retry_timer_.expires_after(std::chrono::milliseconds(100));
        retry_timer_.async_wait([this](error_code e) { if (!e && !stopping_) accept_next(); });
        return;
      }
    } else {
      on_accepted(std::move(socket));
    }
    accept_next();
  });
}

void Acceptor::refuse(tcp::socket& socket, const std::string& peer, Rejection why, const std::string& detail) {
  rejections_.add(why);
  log_.log(spdlog::level::warn, peer, std::string(name(why)), fmt::format("connection from {} closed at once: {}", peer, detail));
  error_code ec;
  socket.close(ec);
}

void Acceptor::on_accepted(tcp::socket socket) {
  error_code ec;
  const auto remote = socket.remote_endpoint(ec);
  if (ec) {  // reset between accept and now
    rejections_.add(Rejection::closed_before_associate_rq);
    return;
  }
  std::string peer = remote.address().to_string();
  if (pending_.size() >= limits_.max_pending) {
    refuse(socket, peer, Rejection::pending_limit,
           fmt::format("{} connections are waiting for their A-ASSOCIATE-RQ (node.max_pending_connections)", pending_.size()));
    return;
  }
  if (auto it = pending_per_source_.find(peer); it != pending_per_source_.end() && it->second >= limits_.max_pending_per_source) {
    refuse(socket, peer, Rejection::pending_per_source_limit,
           fmt::format("{} connections from it are waiting for their A-ASSOCIATE-RQ (node.max_pending_per_source)", it->second));
    return;
  }
  auto p = std::make_shared<Pending>(std::move(socket), std::move(peer));
  pending_.insert(p);
  ++pending_per_source_[p->peer];
  pending_count_ = pending_.size();
  p->timer.expires_after(limits_.timeout);
  p->timer.async_wait([this, p](error_code e) {
    if (e || p->finished) return;
    const auto secs = std::chrono::duration<double>(limits_.timeout).count();
    if (p->ssl && !p->handshake_done) {
      close_pending(p, Rejection::preassociation_timeout, fmt::format("TLS handshake not completed within {:g} s", secs));
    } else if (p->received == 0) {
      close_pending(p, Rejection::preassociation_timeout, fmt::format("nothing received within {:g} s", secs));
    } else {
      const std::string of = p->header_done ? fmt::format("{}", p->expected) : std::string("?");
      close_pending(p, Rejection::preassociation_timeout,
                    fmt::format("A-ASSOCIATE-RQ incomplete after {:g} s ({} of {} bytes received)", secs, p->received, of));
    }
  });
  if (!tls_) return read_header(p);
  // OpenSSL reads and writes the socket itself: it must not block the acceptor's thread (Asio
  // makes a socket non-blocking only once an operation of its own needs it).
  p->socket.non_blocking(true, ec);
  p->ssl.reset(SSL_new(tls_));
  if (!p->ssl || SSL_set_fd(p->ssl.get(), p->socket.native_handle()) != 1)
    return close_pending(p, Rejection::tls_handshake_failed, "cannot start a TLS session: " + dicom::tls_error_text(nullptr));
  handshake(p);
}

void Acceptor::handshake(const std::shared_ptr<Pending>& p) {
  ERR_clear_error();
  const int r = SSL_accept(p->ssl.get());
  if (r == 1) {
    p->handshake_done = true;
    p->tls_subject = dicom::peer_subject(p->ssl.get());
    return read_header(p);
  }
  const int err = SSL_get_error(p->ssl.get(), r);
  if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
    return await_socket(p, err, [this, p](error_code ec) {
      if (ec) return close_pending(p, Rejection::closed_before_associate_rq, "during the TLS handshake: " + ec.message());
      handshake(p);
    });
  }
  std::string why = dicom::tls_error_text(p->ssl.get());
  if (why.empty() && (err == SSL_ERROR_SYSCALL || err == SSL_ERROR_ZERO_RETURN))  // closed, or reset, before saying anything
    return close_pending(p, Rejection::closed_before_associate_rq, "closed by the peer during the TLS handshake");
  close_pending(p, Rejection::tls_handshake_failed,
                fmt::format("TLS handshake failed (this port is for DICOM over TLS): {}", why.empty() ? "protocol error" : why));
}

void Acceptor::await_socket(const std::shared_ptr<Pending>& p, int ssl_error, std::function<void(error_code)> then) {
  p->socket.async_wait(ssl_error == SSL_ERROR_WANT_READ ? tcp::socket::wait_read : tcp::socket::wait_write,
                       [p, then = std::move(then)](error_code ec) {
                         if (!p->finished) then(ec);
                       });
}

void Acceptor::read_some(const std::shared_ptr<Pending>& p, std::uint8_t* data, std::size_t size, ReadHandler handler) {
  if (!p->ssl) return p->socket.async_read_some(asio::buffer(data, size), std::move(handler));
  ERR_clear_error();
  const int n = SSL_read(p->ssl.get(), data, static_cast<int>(size));
  if (n > 0) {
    asio::post(io_, [handler = std::move(handler), n] { handler({}, static_cast<std::size_t>(n)); });
    return;
  }
  const int err = SSL_get_error(p->ssl.get(), n);
  if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
    return await_socket(p, err, [this, p, data, size, handler = std::move(handler)](error_code ec) mutable {
      if (ec) return handler(ec, 0);
      read_some(p, data, size, std::move(handler));
    });
  }
  const std::string why = dicom::tls_error_text(p->ssl.get());
  if (!why.empty()) return close_pending(p, Rejection::closed_before_associate_rq, "TLS error before the A-ASSOCIATE-RQ was complete: " + why);
  asio::post(io_, [handler = std::move(handler)] { handler(asio::error::eof, 0); });
}

void Acceptor::read_header(const std::shared_ptr<Pending>& p) {
  read_some(p, p->buf.data() + p->received, kPduHeader - p->received, [this, p](error_code ec, std::size_t n) {
    if (p->finished) return;
    if (ec) {
      close_pending(p, Rejection::closed_before_associate_rq,
                    fmt::format("{} after {} bytes", peer_went_away(ec) ? "closed by the peer" : ec.message(), p->received));
      return;
    }
    p->received += n;
    if (p->received < kPduHeader) return read_header(p);
    const std::uint8_t type = p->buf[0];
    const std::size_t length = big_endian_32(&p->buf[2]);
    if (type != kAssociateRq) {
      close_pending(p, Rejection::not_associate_rq,
                    fmt::format("first PDU of type {}, not an A-ASSOCIATE-RQ", describe_pdu_type(type)), true);
      return;
    }
    if (kPduHeader + length > limits_.max_request_bytes) {
      close_pending(p, Rejection::associate_rq_too_large,
                    fmt::format("A-ASSOCIATE-RQ of {} bytes announced, more than the {} accepted", length, limits_.max_request_bytes - kPduHeader),
                    true);
      return;
    }
    if (kPduHeader + length < kMinAssociateRqBytes) {
      close_pending(p, Rejection::associate_rq_too_short,
                    fmt::format("A-ASSOCIATE-RQ of {} bytes announced, too short to be one (at least {})", length,
                                kMinAssociateRqBytes - kPduHeader),
                    true);
      return;
    }
    p->header_done = true;
    p->expected = kPduHeader + length;
    read_body(p);
  });
}

void Acceptor::read_body(const std::shared_ptr<Pending>& p) {
  // The buffer grows with what arrives (doubling), not with what the header announces: a peer
  // that announces 256 KiB and sends nothing holds no more than a few bytes here.
  if (p->received == p->buf.size()) p->buf.resize(std::min(p->expected, std::max<std::size_t>(2 * p->received, 4096)));
  read_some(p, p->buf.data() + p->received, p->buf.size() - p->received, [this, p](error_code ec, std::size_t n) {
    if (p->finished) return;
    if (ec) {
      close_pending(p, Rejection::closed_before_associate_rq,
                    fmt::format("{} after {} of {} bytes of its A-ASSOCIATE-RQ", peer_went_away(ec) ? "closed by the peer" : ec.message(),
                                p->received, p->expected));
      return;
    }
    p->received += n;
    if (p->received < p->expected) return read_body(p);
    complete(p);
  });
}

void Acceptor::complete(const std::shared_ptr<Pending>& p) {
  p->finished = true;
  p->timer.cancel();
  forget(p);
  error_code ec;
  const int fd = p->socket.release(ec);
  if (ec) {
    log_.log(spdlog::level::err, p->peer, "release", fmt::format("connection from {}: cannot take over its socket: {}", p->peer, ec.message()));
    return;
  }
  // Asio made the socket non-blocking; DCMTK expects a blocking one (it polls with its timeouts).
  if (const int flags = ::fcntl(fd, F_GETFL); flags >= 0) ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  try {
    on_request_({fd, std::move(p->buf), p->peer, std::move(p->ssl), std::move(p->tls_subject)});
  } catch (const std::exception& e) {
    pacsnode::component_logger("scp")->error("association from {}: {}", p->peer, e.what());
  }
}

void Acceptor::close_pending(const std::shared_ptr<Pending>& p, Rejection why, const std::string& detail, bool send_abort) {
  p->finished = true;
  p->timer.cancel();
  if (send_abort) {
    // A-ABORT, source: service provider, reason: invalid PDU parameter value; best effort, never waits.
    const std::uint8_t abort[] = {0x07, 0, 0, 0, 0, 4, 0, 0, 0x02, 0x06};
    if (p->ssl) {
      ERR_clear_error();
      [[maybe_unused]] const int sent = SSL_write(p->ssl.get(), abort, sizeof abort);  // the socket is non-blocking
      ERR_clear_error();
    } else {
      [[maybe_unused]] const auto sent = ::send(p->socket.native_handle(), abort, sizeof abort, MSG_DONTWAIT | MSG_NOSIGNAL);
    }
  }
  error_code ec;
  p->socket.close(ec);
  forget(p);
  rejections_.add(why);
  // A peer that connects and goes away (port scanner, load balancer health check) is normal.
  const auto level = why == Rejection::closed_before_associate_rq ? spdlog::level::debug : spdlog::level::warn;
  log_.log(level, p->peer, std::string(name(why)), fmt::format("connection from {} closed: {}", p->peer, detail));
}

void Acceptor::forget(const std::shared_ptr<Pending>& p) {
  if (pending_.erase(p) == 0) return;
  if (auto it = pending_per_source_.find(p->peer); it != pending_per_source_.end() && --it->second == 0)
    pending_per_source_.erase(it);
  pending_count_ = pending_.size();
}

}  // namespace scp
