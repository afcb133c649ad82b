// The PostgreSQL connection under the index (scp/index_db.h), with libpq: one database shared by a
// cluster of nodes. Statements run with PQexecParams, parameters and results in text format; there
// is no server-side prepare (the index's queries are short, and a prepared statement would not
// survive a reconnect).
#include <dlfcn.h>
#include <libpq-fe.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <fmt/format.h>

#include "dicom/log.h"
#include "scp/index_db.h"

namespace scp::db {

// Exposed for the unit test of placeholder translation (tests/unit/test_scp_index_db.cpp). `params`:
// the highest number; `used` (if given): which numbers (index N-1) the statement mentions.
std::string pg_translate_placeholders(const std::string& sql, int& params, std::vector<bool>* used = nullptr);

namespace {

// pg_advisory_xact_lock key of the schema migration: "pacsnode" in ASCII.
constexpr long long kSchemaLockKey = 0x706163736e6f6465LL;
// What a session gets when neither the DSN nor the server sets it.
constexpr const char* kConnectTimeoutSeconds = "5";
constexpr const char* kStatementTimeout = "30s";
// Type of a parameter bound with bind_int: bigint (INT8OID), so that "?1 - ?2" or "?1 + 1" resolve;
// text and NULL parameters are left for the server to infer from where they are used.
constexpr Oid kInt8Oid = 20;
// Type of a parameter the statement never mentions ("?3" alone makes 1 and 2 exist): the server
// could not infer one.
constexpr Oid kTextOid = 25;

// libpq, bound when the first PostgreSQL connection opens rather than linked: its dependencies
// (Kerberos, LDAP, SASL, GnuTLS and a dozen more) would otherwise be loaded by every process start
// (the daemon, each `pacsnode worker`, every command), ~4 ms each, and only a PostgreSQL index
// needs them. The Debian package depends on libpq5 by name (cmake/package.cmake).
// The functions used, each listed once: a member of LibPq and a symbol bound by pq().
#define PACSNODE_LIBPQ_FUNCTIONS(X) \
  X(PQclear) \
  X(PQcmdStatus) \
  X(PQcmdTuples) \
  X(PQconnectdbParams) \
  X(PQconnectionNeedsPassword) \
  X(PQconninfoFree) \
  X(PQconninfoParse) \
  X(PQdb) \
  X(PQerrorMessage) \
  X(PQexec) \
  X(PQexecParams) \
  X(PQfinish) \
  X(PQfreemem) \
  X(PQgetisnull) \
  X(PQgetlength) \
  X(PQgetvalue) \
  X(PQhost) \
  X(PQnfields) \
  X(PQntuples) \
  X(PQport) \
  X(PQreset) \
  X(PQresultErrorField) \
  X(PQresultErrorMessage) \
  X(PQresultStatus) \
  X(PQsetNoticeProcessor) \
  X(PQstatus) \
  X(PQtransactionStatus)

struct LibPq {
#define X(name) decltype(&::name) name;
  PACSNODE_LIBPQ_FUNCTIONS(X)
#undef X
};

const LibPq& pq() {
  static const LibPq lib = [] {
    void* handle = ::dlopen("libpq.so.5", RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) throw Error(std::string("postgresql: cannot load libpq (Debian package libpq5): ") + ::dlerror());
    LibPq l{};
    const auto bind = [&](auto& fn, const char* name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(::dlsym(handle, name));
      if (fn == nullptr) throw Error(std::string("postgresql: libpq.so.5 lacks ") + name);
    };
#define X(name) bind(l.name, #name);
    PACSNODE_LIBPQ_FUNCTIONS(X)
#undef X
    return l;
  }();
  return lib;
}

struct ResultDeleter {
  void operator()(PGresult* r) const noexcept { pq().PQclear(r); }
};
using ResultPtr = std::unique_ptr<PGresult, ResultDeleter>;

// Server notices (NOTICE, WARNING below client_min_messages never arrive) go to the index's log at
// debug instead of libpq's default, stderr.
void on_notice(void*, const char* message) {
  std::string_view m(message ? message : "");
  while (!m.empty() && (m.back() == '\n' || m.back() == ' ')) m.remove_suffix(1);
  pacsnode::component_logger("index")->debug("postgresql: {}", m);
}

bool connection_lost_state(std::string_view state) {
  return state.substr(0, 2) == "08" || state == "57P01" || state == "57P02" || state == "57P03";
}

std::string one_line(std::string_view s) {
  std::string out(s);
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  for (auto& c : out)
    if (c == '\n') c = ' ';
  return out;
}

class PgConnection;

class PgStatement final : public Statement {
 public:
  PgStatement(PgConnection& c, std::string sql, int params, std::vector<bool> used)
      : c_(c), sql_(std::move(sql)), used_(std::move(used)), values_(static_cast<std::size_t>(params)),
        types_(static_cast<std::size_t>(params), 0) {
    for (std::size_t i = 0; i < types_.size(); ++i)
      if (!used_[i]) types_[i] = kTextOid;
  }

  void bind_text(int i, const std::string& v) override { set(i, v, 0); }
  void bind_int(int i, std::int64_t v) override { set(i, std::to_string(v), kInt8Oid); }
  void bind_null(int i) override { set(i, std::nullopt, 0); }
  bool step() override;
  std::string text(int column) override {
    check_cell(column);
    if (pq().PQgetisnull(res_.get(), row_, column)) return {};
    return {pq().PQgetvalue(res_.get(), row_, column), static_cast<std::size_t>(pq().PQgetlength(res_.get(), row_, column))};
  }
  std::int64_t integer(int column) override {
    check_cell(column);
    if (pq().PQgetisnull(res_.get(), row_, column)) return 0;
    const char* v = pq().PQgetvalue(res_.get(), row_, column);
    if (v[0] == 't' && v[1] == '\0') return 1;  // boolean
    if (v[0] == 'f' && v[1] == '\0') return 0;
    errno = 0;
    const long long n = std::strtoll(v, nullptr, 10);  // "3" from SUM (numeric) too; "2.5" gives 2
    return errno == ERANGE ? 0 : n;
  }
  bool is_null(int column) override {
    check_cell(column);
    return pq().PQgetisnull(res_.get(), row_, column) != 0;
  }
  std::int64_t changes() override {
    if (!res_) return 0;
    const char* n = pq().PQcmdTuples(res_.get());
    return n && *n ? std::strtoll(n, nullptr, 10) : 0;
  }

 private:
  void set(int i, std::optional<std::string> v, Oid type) {
    if (i < 1 || i > static_cast<int>(values_.size()))
      throw Error(fmt::format("postgresql: parameter {} out of range (the statement has {})", i, values_.size()));
    values_[static_cast<std::size_t>(i - 1)] = std::move(v);
    types_[static_cast<std::size_t>(i - 1)] = used_[static_cast<std::size_t>(i - 1)] ? type : kTextOid;
    // Binding after the statement ran starts it again on the next step().
    res_.reset();
    row_ = -1;
  }
  void check_cell(int column) const {
    if (!res_ || row_ < 0 || row_ >= pq().PQntuples(res_.get()))
      throw Error("postgresql: no current row (step() did not return true)");
    if (column < 0 || column >= pq().PQnfields(res_.get()))
      throw Error(fmt::format("postgresql: column {} out of range (the result has {})", column, pq().PQnfields(res_.get())));
  }

  PgConnection& c_;
  std::string sql_;
  std::vector<bool> used_;
  std::vector<std::optional<std::string>> values_;
  std::vector<Oid> types_;
  ResultPtr res_;
  int row_ = -1;
};

class PgConnection final : public Connection {
 public:
  explicit PgConnection(const std::string& dsn) {
    char* err = nullptr;
    PQconninfoOption* parsed = pq().PQconninfoParse(dsn.c_str(), &err);
    if (!parsed) {
      // The message names the offending keyword, never its value.
      const std::string m = err ? one_line(err) : "out of memory";
      pq().PQfreemem(err);
      throw Error("postgresql: invalid connection string: " + m);
    }
    pq().PQconninfoFree(parsed);
    // Keywords before dbname (the expanded DSN) are defaults the DSN overrides.
    const char* keys[] = {"connect_timeout", "application_name", "dbname", nullptr};
    const char* values[] = {kConnectTimeoutSeconds, "pacsnode", dsn.c_str(), nullptr};
    conn_ = pq().PQconnectdbParams(keys, values, 1);
    if (!conn_) throw Unavailable("postgresql: out of memory");
    pq().PQsetNoticeProcessor(conn_, on_notice, nullptr);
    if (pq().PQstatus(conn_) != CONNECTION_OK) {
      const std::string why = one_line(pq().PQerrorMessage(conn_));
      const std::string m = fmt::format("postgresql {}: {}", describe(), why);
      // libpq gives no SQLSTATE here. Refused by the server (credentials, no such database or
      // role): Error, it will not get better by waiting; anything else (refused connection,
      // timeout, the server starting or shutting down, too many clients): Unavailable.
      auto says = [&](const char* s) { return why.find(s) != std::string::npos; };
      const bool refused = pq().PQconnectionNeedsPassword(conn_) || says("authentication failed") || says("does not exist") ||
                           says("no pg_hba.conf entry") || says("permission denied");
      pq().PQfinish(conn_);
      conn_ = nullptr;
      if (refused) throw Error(m);
      throw Unavailable(m);
    }
    try {
      configure_session();
    } catch (...) {
      pq().PQfinish(conn_);
      conn_ = nullptr;
      throw;
    }
  }
  ~PgConnection() override {
    if (conn_) pq().PQfinish(conn_);
  }
  PgConnection(const PgConnection&) = delete;
  PgConnection& operator=(const PgConnection&) = delete;

  Dialect dialect() const override { return Dialect::postgresql; }

  std::unique_ptr<Statement> prepare(const std::string& sql) override {
    int params = 0;
    std::vector<bool> used;
    std::string translated = pg_translate_placeholders(sql, params, &used);
    return std::make_unique<PgStatement>(*this, std::move(translated), params, std::move(used));
  }

  void exec(const std::string& sql) override { run(sql); }

  void begin() override { run("BEGIN"); }

  void commit() override {
    ResultPtr r = run("COMMIT");
    // COMMIT of a transaction in which a statement failed succeeds, and rolls back.
    if (std::string_view(pq().PQcmdStatus(r.get())) == "ROLLBACK")
      throw Error(fmt::format("postgresql {}: commit: the transaction had failed and was rolled back", describe()));
  }

  void rollback() noexcept override {
    if (!conn_ || pq().PQstatus(conn_) != CONNECTION_OK) return;  // the server rolled it back
    const auto t = pq().PQtransactionStatus(conn_);
    if (t != PQTRANS_INTRANS && t != PQTRANS_INERROR) return;
    pq().PQclear(pq().PQexec(conn_, "ROLLBACK"));
  }

  bool reconnect() noexcept override {
    try {
      pq().PQreset(conn_);
      if (pq().PQstatus(conn_) != CONNECTION_OK) return false;
      pq().PQsetNoticeProcessor(conn_, on_notice, nullptr);
      configure_session();
      return true;
    } catch (...) {
      return false;
    }
  }

  int schema_version() override {
    // Read without creating anything: a node that only looks does not race another's CREATE.
    {
      auto s = prepare("SELECT to_regclass('schema_version') IS NOT NULL");
      if (!s->step() || s->integer(0) == 0) return 0;
    }
    auto s = prepare("SELECT COALESCE(MAX(version), 0) FROM schema_version");
    return s->step() ? static_cast<int>(s->integer(0)) : 0;
  }

  void set_schema_version(int v) override {
    run("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)");
    run("DELETE FROM schema_version");
    auto s = prepare("INSERT INTO schema_version(version) VALUES(?1)");
    s->bind_int(1, v);
    s->step();
  }

  void lock_schema() override {
    if (pq().PQtransactionStatus(conn_) != PQTRANS_INTRANS)
      throw Error("postgresql: lock_schema() outside a transaction (begin() first)");
    // The migration may wait for another node's and may itself run long (an index on a big
    // table): no statement timeout until this transaction ends.
    run("SET LOCAL statement_timeout = 0");
    run(fmt::format("SELECT pg_advisory_xact_lock({})", kSchemaLockKey));
  }

  std::string describe() const override {
    if (!conn_) return "postgresql";
    const char* host = pq().PQhost(conn_);
    const char* port = pq().PQport(conn_);
    const char* db = pq().PQdb(conn_);
    return fmt::format("{}:{}/{}", host && *host ? host : "localhost", port && *port ? port : "5432", db ? db : "");
  }

  // One or more statements without parameters (the simple query protocol); throws the mapped error.
  ResultPtr run(const std::string& sql) {
    if (pq().PQstatus(conn_) != CONNECTION_OK) throw Unavailable(fmt::format("postgresql {}: not connected", describe()));
    return checked(ResultPtr(pq().PQexec(conn_, sql.c_str())));
  }
  // One statement with parameters, text in and out.
  ResultPtr run_params(const std::string& sql, int params, const Oid* types, const char* const* values) {
    if (pq().PQstatus(conn_) != CONNECTION_OK) throw Unavailable(fmt::format("postgresql {}: not connected", describe()));
    return checked(ResultPtr(pq().PQexecParams(conn_, sql.c_str(), params, types, values, nullptr, nullptr, 0)));
  }

 private:
  ResultPtr checked(ResultPtr r) {
    const auto st = r ? pq().PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY) return r;
    fail(r.get());
  }
  [[noreturn]] void fail(const PGresult* r) {
    const char* state_field = r ? pq().PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
    const std::string state = state_field ? state_field : "";
    const char* primary = r ? pq().PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : nullptr;
    const std::string message = one_line(primary ? primary : (r ? pq().PQresultErrorMessage(r) : pq().PQerrorMessage(conn_)));
    const std::string text =
        fmt::format("postgresql {}: {}{}", describe(), message.empty() ? "unknown error" : message,
                    state.empty() ? "" : fmt::format(" (SQLSTATE {})", state));
    if (pq().PQstatus(conn_) != CONNECTION_OK || connection_lost_state(state)) throw Unavailable(text);
    if (state == "40001" || state == "40P01") {
      rollback();  // the transaction is dead; the caller runs it again from begin()
      throw Retry(text);
    }
    throw Error(text);
  }

  void configure_session() {
    run("SET client_min_messages = warning");
    // Keep a timeout the DSN (options=-c statement_timeout=...), role or database already set.
    ResultPtr r = run("SHOW statement_timeout");
    if (pq().PQntuples(r.get()) == 1 && std::string_view(pq().PQgetvalue(r.get(), 0, 0)) == "0")
      run(fmt::format("SET statement_timeout = '{}'", kStatementTimeout));
  }

  PGconn* conn_ = nullptr;
};

bool PgStatement::step() {
  if (!res_) {
    std::vector<const char*> values(values_.size());
    for (std::size_t i = 0; i < values_.size(); ++i) values[i] = values_[i] ? values_[i]->c_str() : nullptr;
    res_ = c_.run_params(sql_, static_cast<int>(values.size()), types_.data(), values.data());
    row_ = -1;
  }
  if (row_ < pq().PQntuples(res_.get())) ++row_;
  return row_ < pq().PQntuples(res_.get());
}

}  // namespace

// ?N -> $N; a bare ? -> $(highest so far + 1), as SQLite numbers them. Not inside '...' strings
// ('' escapes a quote), "..." identifiers, -- comments or /* */ comments.
std::string pg_translate_placeholders(const std::string& sql, int& params, std::vector<bool>* used) {
  if (used) used->clear();
  std::string out;
  out.reserve(sql.size() + 8);
  params = 0;
  const std::size_t n = sql.size();
  std::size_t i = 0;
  while (i < n) {
    const char c = sql[i];
    if (c == '\'' || c == '"') {  // '' or "" inside is an escaped quote: the scan just continues
      const std::size_t end = sql.find(c, i + 1);
      const std::size_t stop = end == std::string::npos ? n : end + 1;
      out.append(sql, i, stop - i);
      i = stop;
    } else if (c == '-' && i + 1 < n && sql[i + 1] == '-') {
      const std::size_t end = sql.find('\n', i);
      const std::size_t stop = end == std::string::npos ? n : end;
      out.append(sql, i, stop - i);
      i = stop;
    } else if (c == '/' && i + 1 < n && sql[i + 1] == '*') {
      const std::size_t end = sql.find("*/", i + 2);
      const std::size_t stop = end == std::string::npos ? n : end + 2;
      out.append(sql, i, stop - i);
      i = stop;
    } else if (c == '?') {
      std::size_t j = i + 1;
      while (j < n && sql[j] >= '0' && sql[j] <= '9') ++j;
      int k = 0;
      if (j == i + 1) {
        k = params + 1;
      } else {
        if (j - i - 1 > 5) throw Error("postgresql: placeholder number too large in: " + sql.substr(i, j - i));
        k = std::atoi(sql.substr(i + 1, j - i - 1).c_str());
        if (k < 1 || k > 32766) throw Error("postgresql: placeholder out of range: " + sql.substr(i, j - i));
      }
      params = std::max(params, k);
      if (used) {
        if (used->size() < static_cast<std::size_t>(k)) used->resize(static_cast<std::size_t>(k), false);
        (*used)[static_cast<std::size_t>(k - 1)] = true;
      }
      out += '$';
      out += std::to_string(k);
      i = j;
    } else {
      out += c;
      ++i;
    }
  }
  return out;
}

std::unique_ptr<Connection> open_postgresql(const std::string& dsn) { return std::make_unique<PgConnection>(dsn); }

}  // namespace scp::db
