#include "scp/receive.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

#include <fmt/format.h>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcostrma.h>
#include <dcmtk/dcmdata/dcuid.h>

namespace scp {
namespace {

// One explicit VR little endian element of group 0002, its value padded to an even length.
void put_element(std::string& out, std::uint16_t element, const char vr[2], std::string_view value, char pad) {
  const std::size_t len = value.size() + (value.size() % 2);
  const auto le16 = [&](std::uint16_t v) {
    out += static_cast<char>(v & 0xff);
    out += static_cast<char>(v >> 8);
  };
  le16(0x0002);
  le16(element);
  out.append(vr, 2);
  if (vr[0] == 'O' && vr[1] == 'B') {  // OB: 2 reserved bytes, then a 32-bit length
    le16(0);
    le16(static_cast<std::uint16_t>(len & 0xffff));
    le16(static_cast<std::uint16_t>(len >> 16));
  } else {
    le16(static_cast<std::uint16_t>(len));
  }
  out += value;
  if (value.size() % 2) out += pad;
}

}  // namespace

std::string part10_meta(std::string_view sop_class_uid, std::string_view sop_instance_uid, std::string_view transfer_syntax_uid,
                        std::string_view source_ae) {
  std::string group;
  put_element(group, 0x0001, "OB", std::string_view("\x00\x01", 2), '\0');
  put_element(group, 0x0002, "UI", sop_class_uid, '\0');
  put_element(group, 0x0003, "UI", sop_instance_uid, '\0');
  put_element(group, 0x0010, "UI", transfer_syntax_uid, '\0');
  put_element(group, 0x0012, "UI", OFFIS_IMPLEMENTATION_CLASS_UID, '\0');
  put_element(group, 0x0013, "SH", OFFIS_DTK_IMPLEMENTATION_VERSION_NAME, ' ');
  if (!source_ae.empty()) put_element(group, 0x0016, "AE", source_ae, ' ');
  std::string out(128, '\0');
  out += "DICM";
  // (0002,0000) UL: the length of the rest of the group.
  out += std::string_view("\x02\x00\x00\x00UL\x04\x00", 8);
  const auto n = static_cast<std::uint32_t>(group.size());
  for (int i = 0; i < 4; ++i) out += static_cast<char>((n >> (8 * i)) & 0xff);
  out += group;
  return out;
}

// DCMTK's output stream API over the sink: every write is taken whole (a failure is the sink's
// to report after the data set was read off the wire, so the association stays usable).
class ReceiveSink::Consumer : public DcmConsumer {
 public:
  explicit Consumer(ReceiveSink& sink) : sink_(sink) {}
  OFBool good() const override { return OFTrue; }
  OFCondition status() const override { return EC_Normal; }
  OFBool isFlushed() const override { return OFTrue; }
  offile_off_t avail() const override { return std::numeric_limits<std::int32_t>::max(); }
  offile_off_t write(const void* buf, offile_off_t buflen) override {
    if (buflen > 0) sink_.take(static_cast<const char*>(buf), static_cast<std::size_t>(buflen));
    return buflen;
  }
  void flush() override {}

 private:
  ReceiveSink& sink_;
};

class ReceiveSink::Stream : public DcmOutputStream {
 public:
  explicit Stream(DcmConsumer* c) : DcmOutputStream(c) {}
};

ReceiveSink::ReceiveSink(std::size_t memory_limit, std::uint64_t max_bytes)
    : memory_limit_(memory_limit),
      max_bytes_(max_bytes),
      consumer_(std::make_unique<Consumer>(*this)),
      stream_(std::make_unique<Stream>(consumer_.get())) {}

ReceiveSink::~ReceiveSink() {
  if (spill_fd_ >= 0) ::close(spill_fd_);
}

void ReceiveSink::start(std::string_view meta, std::filesystem::path spill_file) {
  if (spill_fd_ >= 0) ::close(spill_fd_);
  spill_fd_ = -1;
  spill_.clear();
  spill_target_ = std::move(spill_file);
  buf_.size = 0;
  total_ = 0;
  too_large_ = false;
  error_.clear();
  stream_ = std::make_unique<Stream>(consumer_.get());  // its position back to 0
  take(meta.data(), meta.size());
}

DcmOutputStream& ReceiveSink::stream() { return *stream_; }

void ReceiveSink::take(const char* p, std::size_t n) {
  total_ += n;
  if (total_ > max_bytes_) {
    if (!too_large_ && !spill_.empty() && spill_fd_ >= 0) {  // give the disk back at once
      [[maybe_unused]] const int cut = ::ftruncate(spill_fd_, 0);
    }
    too_large_ = true;
    return;
  }
  if (!spill_.empty()) return spill(p, n);
  ReceiveBuffer& b = buf_;
  if (b.size + n > memory_limit_) {  // too large for memory: on into a file
    spill_ = spill_target_;
    spill_fd_ = ::open(spill_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (spill_fd_ < 0) error_ = fmt::format("create {}: {}", spill_.string(), std::strerror(errno));
    spill(b.data.get(), b.size);
    b.size = 0;
    return spill(p, n);
  }
  if (b.size + n > b.capacity) {
    const std::size_t want = std::min(std::max({b.size + n, b.capacity * 2, std::size_t(1) << 20}), std::max(memory_limit_, b.size + n));
    std::unique_ptr<char[]> grown(new char[want]);  // not value-initialised: no pass over it
    if (b.size) std::memcpy(grown.get(), b.data.get(), b.size);
    b.data = std::move(grown);
    b.capacity = want;
  }
  std::memcpy(b.data.get() + b.size, p, n);
  b.size += n;
}

ReceiveBuffer ReceiveSink::take() {
  ReceiveBuffer out = std::move(buf_);
  buf_ = std::move(spare_);
  buf_.size = 0;
  spare_ = {};
  return out;
}

void ReceiveSink::give_back(ReceiveBuffer b) {
  b.size = 0;
  if (!buf_.data) buf_ = std::move(b);
  else if (!spare_.data) spare_ = std::move(b);
}

void ReceiveSink::spill(const char* p, std::size_t n) {
  while (n > 0 && error_.empty()) {
    const ssize_t w = ::write(spill_fd_, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      error_ = fmt::format("write {}: {}", spill_.string(), std::strerror(w < 0 ? errno : EIO));
      return;
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

void ReceiveSink::finish() {
  if (spill_fd_ >= 0) {
    if (::close(spill_fd_) != 0 && error_.empty()) error_ = fmt::format("write {}: {}", spill_.string(), std::strerror(errno));
    spill_fd_ = -1;
  }
}

void ReceiveSink::discard() noexcept {
  if (spill_fd_ >= 0) ::close(spill_fd_);
  spill_fd_ = -1;
  if (!spill_.empty()) {
    std::error_code ec;
    std::filesystem::remove(spill_, ec);
  }
}

}  // namespace scp
