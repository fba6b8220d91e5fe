//! A scripted HTTP/1.1 server on loopback that answers like the Hub, or fails like a network
//! does: error statuses, a connection reset or a short body mid-transfer, a stall, a redirect.
//!
//! Each route (method + path, query ignored) holds a queue of replies; a request takes the
//! front one, and the last one stays to answer every later request. Unknown routes get `404`.
//! Every request is recorded, so a test can tell which calls were made, and how many.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// What goes wrong while a reply is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Nothing: the whole reply is sent.
    None,
    /// Wait this long before sending anything.
    DelayHead(Duration),
    /// Send the head (with the full `Content-Length`) and this many body bytes, then close.
    Truncate(usize),
    /// Send the head and this many body bytes, then reset the connection (`SO_LINGER` 0).
    Reset(usize),
    /// Send the head and this many body bytes, then wait this long before the rest.
    Stall(usize, Duration),
    /// Send the head, then the body one byte at a time with this wait before each byte.
    Trickle(Duration),
    /// Send no `Content-Length`: the body ends when the connection closes.
    Unsized,
}

/// One scripted reply.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    /// HTTP status.
    pub(crate) status: u16,
    /// Extra headers (`Connection: close` is always added, `Content-Length` unless the fault
    /// is [`Fault::Unsized`]).
    pub(crate) headers: Vec<(String, String)>,
    /// Body; its length is the advertised `Content-Length`, also for `HEAD` (which sends none).
    pub(crate) body: Vec<u8>,
    /// How the transfer goes wrong, if it does.
    pub(crate) fault: Fault,
}

impl Reply {
    /// A status with a short text body.
    pub(crate) fn status(status: u16) -> Self {
        let body = format!("{{\"error\":\"status {status} from the test server\"}}").into_bytes();
        Reply { status, headers: vec![("content-type".into(), "application/json".into())], body, fault: Fault::None }
    }

    /// `200` with a JSON body.
    pub(crate) fn json(value: &serde_json::Value) -> Self {
        Reply {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: value.to_string().into_bytes(),
            fault: Fault::None,
        }
    }

    /// A file of a repo at `commit`, as the Hub's `resolve` route answers it (also for `HEAD`):
    /// `X-Repo-Commit`, an `ETag` (the sha256 of the bytes, as for LFS files) and the size.
    pub(crate) fn file(commit: &str, bytes: &[u8]) -> Self {
        Reply {
            status: 200,
            headers: vec![
                ("x-repo-commit".into(), commit.into()),
                ("etag".into(), format!("\"{}\"", kernels_runtime::digest::sha256_hex(bytes))),
                ("content-type".into(), "application/octet-stream".into()),
            ],
            body: bytes.to_vec(),
            fault: Fault::None,
        }
    }

    /// A redirect to `location`.
    pub(crate) fn redirect(status: u16, location: &str) -> Self {
        Reply { status, headers: vec![("location".into(), location.into())], body: Vec::new(), fault: Fault::None }
    }

    /// Adds a header.
    pub(crate) fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Replaces every header called `name` (any case) with one of this value.
    pub(crate) fn set_header(mut self, name: &str, value: &str) -> Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.header(name, value)
    }

    /// Sets the fault.
    pub(crate) fn fault(mut self, fault: Fault) -> Self {
        self.fault = fault;
        self
    }
}

/// A request the server received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    /// `GET`, `HEAD`, ...
    pub(crate) method: String,
    /// Path without the query.
    pub(crate) path: String,
    /// The query, without the `?` (empty when there is none).
    pub(crate) query: String,
    /// Headers, names in lowercase, in the order received.
    pub(crate) headers: Vec<(String, String)>,
}

impl Request {
    /// The value of header `name` (lowercase), if it was sent.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Default)]
struct State {
    routes: HashMap<(String, String), VecDeque<Reply>>,
    log: Vec<Request>,
}

/// The server; it stops when dropped.
#[derive(Debug)]
pub(crate) struct Server {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Server {
    /// Starts a server on `127.0.0.1:0`.
    pub(crate) fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let state = state.clone();
                    std::thread::spawn(move || serve(stream, &state));
                }
            })
        };
        Server { addr, state, stop, thread: Some(thread) }
    }

    /// `http://127.0.0.1:<port>`.
    pub(crate) fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queues replies for `method path` (see the module docs for the order).
    pub(crate) fn route(&self, method: &str, path: &str, replies: impl IntoIterator<Item = Reply>) -> &Self {
        lock(&self.state).routes.entry((method.into(), path.into())).or_default().extend(replies);
        self
    }

    /// Every request received so far.
    pub(crate) fn requests(&self) -> Vec<Request> {
        lock(&self.state).log.clone()
    }

    /// How many requests were `method path`.
    pub(crate) fn count(&self, method: &str, path: &str) -> usize {
        lock(&self.state).log.iter().filter(|r| r.method == method && r.path == path).count()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(stream: TcpStream, state: &Mutex<State>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" || line == "\n" => break,
            Ok(_) => {
                if let Some((name, value)) = line.trim_end().split_once(':') {
                    headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
                }
            }
        }
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let (path, query) = (path.to_owned(), query.to_owned());
    let reply = {
        let mut state = lock(state);
        state.log.push(Request { method: method.clone(), path: path.clone(), query, headers });
        match state.routes.get_mut(&(method.clone(), path)) {
            Some(queue) if queue.len() > 1 => queue.pop_front(),
            Some(queue) => queue.front().cloned(),
            None => None,
        }
        .unwrap_or_else(|| Reply::status(404))
    };
    write_reply(stream, &reply, method == "HEAD");
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        302 => "Found",
        307 => "Temporary Redirect",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn write_reply(mut stream: TcpStream, reply: &Reply, head_only: bool) {
    if let Fault::DelayHead(wait) = reply.fault {
        std::thread::sleep(wait);
    }
    let mut head = format!("HTTP/1.1 {} {}\r\n", reply.status, reason(reply.status));
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if reply.fault != Fault::Unsized {
        head.push_str(&format!("content-length: {}\r\n", reply.body.len()));
    }
    head.push_str("connection: close\r\n\r\n");
    if stream.write_all(head.as_bytes()).is_err() || head_only {
        let _ = stream.flush();
        return;
    }
    let body = &reply.body;
    let result = match reply.fault {
        Fault::None | Fault::DelayHead(_) | Fault::Unsized => stream.write_all(body),
        Fault::Truncate(sent) => {
            let _ = stream.write_all(&body[..sent.min(body.len())]);
            let _ = stream.flush();
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
        Fault::Reset(sent) => {
            let _ = stream.write_all(&body[..sent.min(body.len())]);
            let _ = stream.flush();
            // Give the client time to read the partial body before the reset discards it.
            std::thread::sleep(Duration::from_millis(50));
            reset(stream);
            return;
        }
        Fault::Stall(sent, wait) => {
            let sent = sent.min(body.len());
            let _ = stream.write_all(&body[..sent]);
            let _ = stream.flush();
            std::thread::sleep(wait);
            stream.write_all(&body[sent..])
        }
        Fault::Trickle(wait) => {
            for byte in body {
                std::thread::sleep(wait);
                if stream.write_all(std::slice::from_ref(byte)).and_then(|()| stream.flush()).is_err() {
                    return;
                }
            }
            Ok(())
        }
    };
    if result.is_ok() {
        let _ = stream.flush();
    }
}

/// Closes with a TCP reset rather than an orderly shutdown.
#[cfg(unix)]
fn reset(stream: TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: the descriptor is owned by `stream`, alive for the call; the option value points
    // to a `linger` that lives across the call, with its exact size passed.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt(SO_LINGER): {}", std::io::Error::last_os_error());
    drop(stream);
}

#[cfg(not(unix))]
fn reset(stream: TcpStream) {
    let _ = stream.shutdown(Shutdown::Both);
}

/// Every entry under `root`, relative, sorted: directories end in `/`, links show ` -> target`,
/// files show their size.
pub(crate) fn tree(root: &Path) -> Vec<String> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for path in paths {
            let rel = path.strip_prefix(root).unwrap_or(&path).display().to_string();
            let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).map(|t| t.display().to_string()).unwrap_or_default();
                out.push(format!("{rel} -> {target}"));
            } else if meta.is_dir() {
                out.push(format!("{rel}/"));
                walk(&path, root, out);
            } else {
                out.push(format!("{rel} ({} bytes)", meta.len()));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out
}
