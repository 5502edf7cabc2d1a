# Sourced by the perf scripts: a run directory removed on exit (with every process whose pid
# file is in it), and an nginx origin serving a 1 KiB file at http://127.0.0.1:18080/1k.
# Sets $run.
run=$(mktemp -d)
chmod 755 "$run" # nginx's workers read www/ below it
trap 'kill $(cat "$run"/*.pid 2>/dev/null) 2>/dev/null || true; rm -rf "$run"' EXIT
mkdir -p "$run/www" "$run/conf"
head -c 1024 /dev/zero | tr '\0' x > "$run/www/1k"
cat > "$run/origin.conf" <<NGINX
worker_processes 1;
daemon on;
pid $run/origin.pid;
error_log $run/origin-error.log warn;
events { worker_connections 20000; }
http {
  access_log off; keepalive_requests 1000000; keepalive_timeout 120s;
  client_body_temp_path $run; proxy_temp_path $run; fastcgi_temp_path $run; uwsgi_temp_path $run; scgi_temp_path $run;
  server { listen 127.0.0.1:18080 reuseport backlog=4096; root $run/www; }
}
NGINX
nginx -c "$run/origin.conf"
