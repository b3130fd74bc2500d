// A load generator for unary gRPC calls whose own CPU hardly counts beside the server's.
//
// The Python clients of benchmarks/load.py cost about a third of a raw RSA-2048 signature per
// call, and on a 2-core machine they share the cores with the server they measure. This one
// sends requests serialised beforehand (by benchmarks/native_client.py, with the generated
// Python classes) over gRPC's C++ core with mutual TLS: it knows no message but the worker
// number of ServerInfoResponse, read to spread its connections over the server's workers.
//
// Usage: unary_load SPEC_FILE. The spec is lines of "name value":
//   address HOST:PORT / root, key, chain PEM_PATH / workers N / start_at EPOCH_SECONDS /
//   seconds S / method /package.Service/Method / then one "client HEX,HEX,..." line per
//   caller: the requests it sends, in order, one call each, from start_at for S seconds.
// Prints one JSON object: calls answered in the window, refusals, the first refusal's message,
// how many callers ran out of requests before the window ended, this process's CPU seconds over
// the window, and the latency of each call answered (seconds).

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/byte_buffer.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <ctime>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr int kConnectAttempts = 50;
const char kServerInfo[] = "/signserver.v1.InfoService/ServerInfo";

struct Spec {
  std::string address, root, key, chain, method;
  int workers = 1;
  double start_at = 0, seconds = 1;
  std::vector<std::vector<std::string>> clients;
};

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::string from_hex(const std::string& hex) {
  std::string bytes;
  bytes.reserve(hex.size() / 2);
  for (size_t i = 0; i + 1 < hex.size(); i += 2) bytes.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return bytes;
}

Spec read_spec(const std::string& path) {
  Spec spec;
  std::istringstream lines(read_file(path));
  std::string line;
  while (std::getline(lines, line)) {
    auto space = line.find(' ');
    if (space == std::string::npos) continue;
    std::string name = line.substr(0, space), value = line.substr(space + 1);
    if (name == "address") spec.address = value;
    else if (name == "root") spec.root = read_file(value);
    else if (name == "key") spec.key = read_file(value);
    else if (name == "chain") spec.chain = read_file(value);
    else if (name == "method") spec.method = value;
    else if (name == "workers") spec.workers = std::stoi(value);
    else if (name == "start_at") spec.start_at = std::stod(value);
    else if (name == "seconds") spec.seconds = std::stod(value);
    else if (name == "client") {
      std::vector<std::string> requests;
      std::istringstream items(value);
      std::string item;
      while (std::getline(items, item, ',')) requests.push_back(from_hex(item));
      spec.clients.push_back(std::move(requests));
    } else throw std::runtime_error("unknown spec line: " + name);
  }
  return spec;
}

double now_epoch() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

double process_cpu() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

grpc::ByteBuffer buffer_of(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

std::string bytes_of(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  std::string out;
  if (!buffer.Dump(&slices).ok()) return out;
  for (const auto& s : slices) out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return out;
}

bool read_varint(const std::string& b, size_t& i, uint64_t& value) {
  value = 0;
  for (int shift = 0; i < b.size() && shift < 64; shift += 7) {
    uint8_t byte = static_cast<uint8_t>(b[i++]);
    value |= static_cast<uint64_t>(byte & 0x7f) << shift;
    if (!(byte & 0x80)) return true;
  }
  return false;
}

// Field 5 (uint32 worker) of ServerInfoResponse; 0 when absent (proto3's default).
int worker_of(const std::string& message) {
  size_t i = 0;
  uint64_t key, value;
  while (i < message.size() && read_varint(message, i, key)) {
    int field = static_cast<int>(key >> 3), wire = static_cast<int>(key & 7);
    if (wire == 0) {
      if (!read_varint(message, i, value)) break;
      if (field == 5) return static_cast<int>(value);
    } else if (wire == 2) {
      if (!read_varint(message, i, value)) break;
      i += value;
    } else if (wire == 1) i += 8;
    else if (wire == 5) i += 4;
    else break;
  }
  return 0;
}

// One unary call on the stub's channel; the status, and the answer in *answer.
grpc::Status call(grpc::GenericStub& stub, grpc::CompletionQueue& queue, const std::string& method,
                  const std::string& request, std::string* answer) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  grpc::ByteBuffer sent = buffer_of(request), received;
  grpc::Status status;
  auto reader = stub.PrepareUnaryCall(&context, method, sent, &queue);
  reader->StartCall();
  reader->Finish(&received, &status, reinterpret_cast<void*>(1));
  void* tag;
  bool ok;
  queue.Next(&tag, &ok);
  if (answer != nullptr && status.ok()) *answer = bytes_of(received);
  return status;
}

struct Totals {
  std::atomic<long> calls{0}, refusals{0}, exhausted{0};
  std::mutex lock;
  std::string first_refusal;
  std::vector<int> taken;
  std::vector<double> latencies;  // seconds, of every call answered in the window
};

void client(const Spec& spec, const std::vector<std::string>& requests, int index, Totals& totals) {
  grpc::SslCredentialsOptions tls{spec.root, spec.key, spec.chain};
  auto credentials = grpc::SslCredentials(tls);
  int share = (static_cast<int>(spec.clients.size()) + spec.workers - 1) / spec.workers;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<grpc::GenericStub> stub;
  grpc::CompletionQueue queue;
  for (int attempt = 0; attempt < kConnectAttempts; ++attempt) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // a connection of its own
    args.SetInt("signserver.bench.connection", index * kConnectAttempts + attempt);
    channel = grpc::CreateCustomChannel(spec.address, credentials, args);
    stub = std::make_unique<grpc::GenericStub>(channel);
    std::string info;
    if (!call(*stub, queue, kServerInfo, "", &info).ok()) continue;
    int worker = worker_of(info);
    std::lock_guard<std::mutex> guard(totals.lock);
    if (worker >= static_cast<int>(totals.taken.size()) || totals.taken[worker] < share ||
        attempt == kConnectAttempts - 1) {
      if (worker < static_cast<int>(totals.taken.size())) ++totals.taken[worker];
      break;
    }
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(std::max(0.0, spec.start_at - now_epoch())));
  double end = spec.start_at + spec.seconds;
  std::vector<double> latencies;
  for (const auto& request : requests) {
    if (now_epoch() >= end) break;
    auto began = std::chrono::steady_clock::now();
    grpc::Status status = call(*stub, queue, spec.method, request, nullptr);
    if (status.ok()) {
      ++totals.calls;
      latencies.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count());
    } else {
      ++totals.refusals;
      std::lock_guard<std::mutex> guard(totals.lock);
      if (totals.first_refusal.empty()) totals.first_refusal = status.error_message();
    }
  }
  if (now_epoch() < end) ++totals.exhausted;  // ran out of requests inside the window
  std::lock_guard<std::mutex> guard(totals.lock);
  totals.latencies.insert(totals.latencies.end(), latencies.begin(), latencies.end());
}

std::string json_string(const std::string& text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) < 0x20) continue;
    out += c;
  }
  return out + "\"";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: unary_load SPEC_FILE\n";
    return 2;
  }
  Spec spec;
  try {
    spec = read_spec(argv[1]);
  } catch (const std::exception& e) {
    std::cerr << "unary_load: " << e.what() << "\n";
    return 2;
  }
  Totals totals;
  totals.taken.assign(spec.workers, 0);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < spec.clients.size(); ++i)
    threads.emplace_back(client, std::cref(spec), std::cref(spec.clients[i]), static_cast<int>(i), std::ref(totals));
  // The window's CPU: from start_at (the connections are made) to its end (the last calls made).
  std::this_thread::sleep_for(std::chrono::duration<double>(std::max(0.0, spec.start_at - now_epoch())));
  double cpu_before = process_cpu();
  std::this_thread::sleep_for(std::chrono::duration<double>(std::max(0.0, spec.start_at + spec.seconds - now_epoch())));
  double cpu_after = process_cpu();
  for (auto& t : threads) t.join();
  std::cout << "{\"calls\": " << totals.calls << ", \"refusals\": " << totals.refusals
            << ", \"exhausted\": " << totals.exhausted
            << ", \"first_refusal\": " << json_string(totals.first_refusal)
            << ", \"cpu_seconds\": " << (cpu_after - cpu_before) << ", \"latencies\": [";
  for (size_t i = 0; i < totals.latencies.size(); ++i) std::cout << (i ? "," : "") << totals.latencies[i];
  std::cout << "]}" << std::endl;
  return 0;
}
