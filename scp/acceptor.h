#pragma once
// The pre-association stage of the storage SCP. Every accepted connection first has to send its
// A-ASSOCIATE-RQ PDU, which is read here, for all connections at once on one Asio thread, each
// with its own deadline (node.preassociation_timeout_seconds). Only a complete request goes on to
// DCMTK, so no connection can make the negotiation of another one wait. Connections still waiting
// for their request are bounded, in all and per source address; beyond that a new connection is
// closed at once. What is turned away is counted and logged at most once per peer and reason per
// 10 s (PeerLog).
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include "scp/counters.h"
#include "scp/peer_log.h"

struct ssl_st;
struct ssl_ctx_st;

namespace scp {

// Upper bound of an A-ASSOCIATE-RQ PDU, header included. A large real request (128 presentation
// contexts of 20 transfer syntaxes each, plus user identity) stays below 200 KiB; DCMTK's own
// limit (dcmAssociatePDUSizeLimit) is 1 MiB. At most max_pending requests are buffered at once.
inline constexpr std::size_t kMaxAssociateRqBytes = 256 * 1024;
// PDU header (6) plus the fixed fields of an A-ASSOCIATE-RQ (protocol version, AE titles, reserved).
inline constexpr std::size_t kMinAssociateRqBytes = 6 + 68;

struct AcceptorLimits {
  std::chrono::milliseconds timeout{5000};
  std::size_t max_pending = 64;
  std::size_t max_pending_per_source = 8;
  std::size_t max_request_bytes = kMaxAssociateRqBytes;
};

struct SslFree {
  void operator()(ssl_st* ssl) const;
};
using SslPtr = std::unique_ptr<ssl_st, SslFree>;

// A connection that has sent a complete A-ASSOCIATE-RQ.
struct AssociateRequest {
  int fd = -1;                    // blocking socket, owned by whoever receives this
  std::vector<std::uint8_t> pdu;  // the A-ASSOCIATE-RQ PDU, header included, as read off the socket (decrypted)
  std::string peer;               // source IPv4 address
  SslPtr tls;                     // DICOM over TLS: the session on `fd`, handshake done; null for plain DICOM
  std::string tls_subject;        // the client certificate's subject (RFC 2253), "" without one
};

class Acceptor {
 public:
  // Runs on the acceptor's thread, so it must not wait for any peer: it gets the request whole.
  using Handler = std::function<void(AssociateRequest)>;

  // Takes over `listen_fd` (a listening TCP socket) and closes it at stop(). With `tls` (an
  // OpenSSL context that outlives the acceptor) every connection first completes a TLS handshake,
  // within the same deadline, and the request is read through TLS.
  Acceptor(int listen_fd, AcceptorLimits limits, ReasonCounters<Rejection>& rejections, PeerLog& log, Handler on_request,
           ssl_ctx_st* tls = nullptr);
  ~Acceptor();
  Acceptor(const Acceptor&) = delete;
  Acceptor& operator=(const Acceptor&) = delete;

  void start();
  // Stops accepting, closes the connections still waiting for their request, joins the thread.
  void stop();
  // Connections accepted whose A-ASSOCIATE-RQ has not arrived whole yet.
  std::size_t pending() const { return pending_count_.load(); }

 private:
  struct Pending;
  void accept_next();
  void on_accepted(boost::asio::ip::tcp::socket socket);
  void handshake(const std::shared_ptr<Pending>& p);
  // After SSL_ERROR_WANT_READ/WRITE: `then` once the socket is ready for what OpenSSL wants
  // (never once the connection is finished).
  void await_socket(const std::shared_ptr<Pending>& p, int ssl_error, std::function<void(boost::system::error_code)> then);
  // async_read_some on the socket, or SSL_read waiting for the socket as TLS needs.
  using ReadHandler = std::function<void(boost::system::error_code, std::size_t)>;
  void read_some(const std::shared_ptr<Pending>& p, std::uint8_t* data, std::size_t size, ReadHandler handler);
  void read_header(const std::shared_ptr<Pending>& p);
  void read_body(const std::shared_ptr<Pending>& p);
  void complete(const std::shared_ptr<Pending>& p);
  // Closes a waiting connection (sending an A-ABORT first for protocol violations), counts and logs why.
  void close_pending(const std::shared_ptr<Pending>& p, Rejection why, const std::string& detail, bool send_abort = false);
  void forget(const std::shared_ptr<Pending>& p);
  void refuse(boost::asio::ip::tcp::socket& socket, const std::string& peer, Rejection why, const std::string& detail);
  void schedule_flush();

  AcceptorLimits limits_;
  ReasonCounters<Rejection>& rejections_;
  PeerLog& log_;
  Handler on_request_;
  ssl_ctx_st* tls_ = nullptr;
  boost::asio::io_context io_;
  boost::asio::ip::tcp::acceptor acceptor_;
  boost::asio::steady_timer retry_timer_;  // after accept() failed for want of descriptors
  boost::asio::steady_timer flush_timer_;  // PeerLog summaries
  std::set<std::shared_ptr<Pending>> pending_;
  std::map<std::string, std::size_t> pending_per_source_;
  std::atomic<std::size_t> pending_count_{0};
  bool stopping_ = false;  // on the acceptor's thread only
  std::thread thread_;
};

}  // namespace scp
