"""The production topology on loopback: ``gunicorn wsgi:app`` (gunicorn.conf.py) behind deploy/nginx.conf.

Used by tests/test_production.py and tests/bench/webhook.py, so both run exactly what the README tells an
operator to run. The shipped nginx.conf is copied with only its machine-specific lines replaced (addresses,
the certificate, pid/log/temp paths); each replacement must match exactly once, so a change to the shipped
file that the copy would silently miss fails here instead.
"""
import datetime
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NGINX_CONF = ROOT / "deploy" / "nginx.conf"
LOADBALANCER_CONF = ROOT / "deploy" / "loadbalancer.conf"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def self_signed_certificate(directory: Path):
    """A certificate for 127.0.0.1 (its own issuer) and its key, as PEM files; returns their paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                               x509.DNSName("localhost")]), critical=False)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def render_nginx_conf(directory: Path, *, http_port, tls_port, upstream, certificate, key) -> Path:
    """deploy/nginx.conf with loopback ports, ``upstream`` (host:port) and every path inside ``directory``."""
    temp = {name: directory / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for path in temp.values():
        path.mkdir(parents=True, exist_ok=True)
    # As root nginx switches its workers to `user`; root keeps them able to use the test's private tmp dir.
    user = "user root;" if os.geteuid() == 0 else "# user: not root, nginx runs as whoever starts it"
    replacements = {
        "user www-data;": user,
        "pid /run/nginx.pid;": f"pid {directory / 'nginx.pid'};",
        "error_log /var/log/nginx/error.log warn;": f"error_log {directory / 'error.log'} warn;",
        "access_log /var/log/nginx/access.log wizard;": f"access_log {directory / 'access.log'} wizard;",
        "client_body_temp_path /var/lib/nginx/body;": f"client_body_temp_path {temp['body']};",
        # Unused by this config, but nginx creates every module's temp dir at start (not allowed as a user).
        "proxy_temp_path /var/lib/nginx/proxy;": " ".join(
            f"{module}_temp_path {temp[module]};" for module in ("proxy", "fastcgi", "uwsgi", "scgi")),
        "server 127.0.0.1:8000;": f"server {upstream};",
        "listen 80;": f"listen 127.0.0.1:{http_port};",
        "listen [::]:80;": "",
        "listen 443 ssl http2;": f"listen 127.0.0.1:{tls_port} ssl http2;",
        "listen [::]:443 ssl http2;": "",
        "ssl_certificate /etc/ssl/wizard/fullchain.pem;": f"ssl_certificate {certificate};",
        "ssl_certificate_key /etc/ssl/wizard/privkey.pem;": f"ssl_certificate_key {key};",
    }
    return _render(NGINX_CONF, directory / "nginx.conf", replacements)


def _render(source: Path, path: Path, replacements: dict) -> Path:
    text = source.read_text()
    for old, new in replacements.items():
        assert text.count(old) == 1, f"deploy/{source.name} no longer has exactly one {old!r}"
        text = text.replace(old, new)
    path.write_text(text)
    return path


def render_loadbalancer_conf(directory: Path, *, tls_port, machines, certificate, key, trusted) -> Path:
    """deploy/loadbalancer.conf on loopback: ``machines`` are two host:port of web machines' nginx (TLS, a
    certificate for ``localhost`` signed by ``trusted``)."""
    for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (directory / name).mkdir(parents=True, exist_ok=True)
    first, second = machines
    replacements = {
        "pid /run/nginx-balancer.pid;": f"pid {directory / 'nginx.pid'};",
        "error_log /var/log/nginx/balancer-error.log warn;": f"error_log {directory / 'error.log'} warn;",
        "access_log /var/log/nginx/balancer-access.log wizard;": f"access_log {directory / 'access.log'} wizard;",
        "client_body_temp_path /var/lib/nginx/balancer-body;": f"client_body_temp_path {directory / 'body'};",
        "proxy_temp_path /var/lib/nginx/balancer-proxy;": " ".join(
            f"{module}_temp_path {directory / module};" for module in ("proxy", "fastcgi", "uwsgi", "scgi")),
        "server 10.0.0.11:443 ": f"server {first} ",
        "server 10.0.0.12:443 ": f"server {second} ",
        "listen 443 ssl http2;": f"listen 127.0.0.1:{tls_port} ssl http2;",
        "ssl_certificate /etc/ssl/wizard/fullchain.pem;": f"ssl_certificate {certificate};",
        "ssl_certificate_key /etc/ssl/wizard/privkey.pem;": f"ssl_certificate_key {key};",
        "proxy_ssl_name crm.example.com;": "proxy_ssl_name localhost;",
        "proxy_ssl_trusted_certificate /etc/ssl/certs/ca-certificates.crt;":
            f"proxy_ssl_trusted_certificate {trusted};",
    }
    path = _render(LOADBALANCER_CONF, directory / "nginx.conf", replacements)
    if os.geteuid() == 0:  # else nginx's workers run as nobody, who may not use the test's private tmp dir
        path.write_text("user root;\n" + path.read_text())
    return path


def _wait_until(check, process, what, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode}")
        if check():
            return
        time.sleep(0.1)
    stop(process)
    raise RuntimeError(f"{what} did not start within {seconds} s")


def _answers(port, tls=False):
    import ssl
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as raw:
            sock = raw
            if tls:
                context = ssl.create_default_context()
                context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
                sock = context.wrap_socket(raw)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            return sock.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def start_gunicorn(env: dict, port: int, args=(), log=None):
    """``gunicorn wsgi:app`` in the repository (so gunicorn.conf.py applies), serving on 127.0.0.1:``port``.

    ``env`` is added to this process's environment; ``args`` are extra command-line options (the benchmark
    gives ``-w``)."""
    gunicorn = shutil.which("gunicorn", path=str(Path(sys.executable).parent)) or "gunicorn"
    process = subprocess.Popen([gunicorn, *args, "wsgi:app"], cwd=ROOT, start_new_session=True,
                               env={**os.environ, **env, "WIZARD_BIND": f"127.0.0.1:{port}"},
                               stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT if log else None)
    try:
        _wait_until(lambda: _answers(port), process, "gunicorn")
    except RuntimeError as exc:
        tail = Path(log.name).read_text(errors="replace")[-3000:] if log and hasattr(log, "name") else ""
        raise RuntimeError(f"{exc}\n{tail}") from None
    return process


def start_nginx(conf: Path, tls_port: int):
    """Debian's nginx with ``conf``, in the foreground (``daemon off``) so the test owns the process."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    directory = conf.parent
    process = subprocess.Popen([nginx, "-p", str(directory), "-e", str(directory / "error.log"), "-c", str(conf),
                                "-g", "daemon off;"], start_new_session=True)
    _wait_until(lambda: _answers(tls_port, tls=True), process, "nginx")
    return process


def stop_group(pgid, seconds=30):
    """SIGTERM to a whole process group, however its leader fared (after a gunicorn restart the master is
    another process of the group), then SIGKILL to what is left after ``seconds``."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        # The leader is the test's own child: once it has exited it stays a zombie, still in the group, until
        # it is reaped (without this the wait always ran its full 30 s after a restart).
        try:
            os.waitpid(pgid, os.WNOHANG)
        except ChildProcessError:
            pass
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def stop(process, seconds=30):
    """SIGTERM to the process group (gunicorn's master and workers; nginx's master and workers), then wait."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
