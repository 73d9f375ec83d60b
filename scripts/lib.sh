# Shared by scripts/services.sh and scripts/bench.sh; `source` it.

# A loopback port nothing listens on now.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# run_nisshi BIN PORT ENGINE: the broker on 127.0.0.1:PORT only, in its own session, in the
# foreground (callers background it). A sqlite ENGINE path is relative to the current folder.
# Not with the caller's RUST_LOG: one meant for lakectl made the broker log 30 MB/s (60 GB in
# half an hour of an idle stack with the registry polling).
run_nisshi() {
  local url="tcp://127.0.0.1:$2"
  exec env -u RUST_LOG setsid "$1" broker --listener-url "$url" --advertised-listener-url "$url" \
    --storage-engine "$3" --group-initial-rebalance-delay 0s --silent
}
