//! One connection to Redis, shared by every concurrent call and pipelined:
//! commands go out in the order they were sent and Redis answers in that
//! order, so each reply goes to the oldest call still waiting.
//!
//! The calling task writes its own command when nobody else is writing (on
//! plain TCP, a non-blocking write that does not wait), and calls that
//! arrive during a write are sent by that writer in one batch. One task per
//! connection reads the replies and hands each to its caller; a second one
//! takes over writing when the socket is full, and does all writing on TLS.
//! Reading never waits for writing: a peer that answers before it reads on
//! (a proxy) cannot stall the connection with both sides' buffers full.
//!
//! A caller that gives up (a timeout) leaves its place in the queue; its
//! reply is read and dropped, so the order stays right for everyone else.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::resp::{self, ParseError, Reply};

/// What happened to a call that got no reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CallError {
    /// The connection had already failed: the command was not sent.
    NotSent(String),
    /// The connection failed after the command was queued: it may have run.
    Lost(String),
}

type Waiter = oneshot::Sender<Result<Reply, String>>;

/// Messages of a subscriber connection: the payload of each `message`.
pub(crate) type Messages = mpsc::UnboundedReceiver<Vec<u8>>;

/// A handle on one connection; clones share it. The connection closes when
/// the last handle is dropped.
#[derive(Debug, Clone)]
pub(crate) struct Pipe {
    handle: Arc<Handle>,
}

#[derive(Debug)]
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.fail("the connection was closed".to_owned());
    }
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Wakes the writer task: bytes a caller could not write.
    io: Notify,
    /// Cancelled when the connection fails or is closed: both tasks end.
    closed: CancellationToken,
    /// Plain TCP: the write half callers write to directly.
    direct: Option<Arc<OwnedWriteHalf>>,
}

#[derive(Debug, Default)]
struct State {
    /// Commands queued and not yet written.
    out: Vec<u8>,
    /// A buffer to swap with `out`, so that writing does not allocate.
    spare: Vec<u8>,
    /// Someone (a caller or the reader task) is writing `out`.
    writing: bool,
    /// One per command written or queued, oldest first.
    waiting: VecDeque<Waiter>,
    /// Why the connection is unusable, once it is.
    broken: Option<String>,
}

/// The write side as the writer task holds it.
enum Writer {
    Tcp(Arc<OwnedWriteHalf>),
    Stream(Box<dyn AsyncWrite + Send + Unpin>),
}

impl Pipe {
    /// Run a connection over a plain TCP stream.
    pub(crate) fn tcp(stream: TcpStream, subscriber: bool) -> (Pipe, Option<Messages>) {
        let (reader, writer) = stream.into_split();
        let writer = Arc::new(writer);
        Self::start(
            reader,
            Writer::Tcp(writer.clone()),
            Some(writer),
            subscriber,
        )
    }

    /// Run a connection over any stream (TLS).
    pub(crate) fn stream<S>(stream: S, subscriber: bool) -> (Pipe, Option<Messages>)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (reader, writer) = tokio::io::split(stream);
        Self::start(reader, Writer::Stream(Box::new(writer)), None, subscriber)
    }

    fn start<R>(
        reader: R,
        writer: Writer,
        direct: Option<Arc<OwnedWriteHalf>>,
        subscriber: bool,
    ) -> (Pipe, Option<Messages>)
    where
        R: AsyncRead + Send + Unpin + 'static,
    {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            io: Notify::new(),
            closed: CancellationToken::new(),
            direct,
        });
        let (messages, receiver) = if subscriber {
            let (sender, receiver) = mpsc::unbounded_channel();
            (Some(sender), Some(receiver))
        } else {
            (None, None)
        };
        tokio::spawn(read_replies(shared.clone(), reader, messages));
        tokio::spawn(write_backlog(shared.clone(), writer));
        (
            Pipe {
                handle: Arc::new(Handle { shared }),
            },
            receiver,
        )
    }

    /// Send one encoded command and wait for its reply. An error reply is a
    /// reply ([`Reply::Error`]), not an `Err`.
    pub(crate) async fn call(&self, command: &[u8]) -> Result<Reply, CallError> {
        let receiver = self.send(command)?;
        match receiver.await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(why)) => Err(CallError::Lost(why)),
            Err(_) => Err(CallError::Lost("the connection was closed".to_owned())),
        }
    }

    /// Queue `command` and write it now if nobody else is writing. Runs to
    /// completion without waiting, so a caller that is cancelled cannot
    /// leave half a command on the wire.
    fn send(&self, command: &[u8]) -> Result<oneshot::Receiver<Result<Reply, String>>, CallError> {
        let shared = &self.handle.shared;
        let (sender, receiver) = oneshot::channel();
        let batch = {
            let mut state = shared.lock();
            if let Some(why) = &state.broken {
                return Err(CallError::NotSent(why.clone()));
            }
            state.waiting.push_back(sender);
            state.out.extend_from_slice(command);
            if state.writing {
                return Ok(receiver);
            }
            state.writing = true;
            if shared.direct.is_none() {
                drop(state);
                shared.io.notify_one();
                return Ok(receiver);
            }
            let spare = std::mem::take(&mut state.spare);
            std::mem::replace(&mut state.out, spare)
        };
        shared.write_direct(batch);
        Ok(receiver)
    }

    /// Whether the connection has failed or been closed.
    pub(crate) fn is_broken(&self) -> bool {
        self.handle.shared.lock().broken.is_some()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update of the state is a few field writes that cannot panic
        // half-way.
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Mark the connection unusable and fail every waiting call.
    fn fail(&self, why: String) {
        let waiting = {
            let mut state = self.lock();
            if state.broken.is_none() {
                state.broken = Some(why.clone());
            }
            std::mem::take(&mut state.waiting)
        };
        for waiter in waiting {
            let _ = waiter.send(Err(why.clone()));
        }
        self.closed.cancel();
    }

    /// Write `batch` and whatever is queued meanwhile, without waiting: if
    /// the socket is full, the rest goes to the writer task.
    fn write_direct(&self, mut batch: Vec<u8>) {
        let writer = self.direct.as_ref().expect("direct writes on TCP only");
        let mut written = 0;
        loop {
            while written < batch.len() {
                match writer.try_write(&batch[written..]) {
                    Ok(0) => break,
                    Ok(n) => written += n,
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                    Err(err) => {
                        self.fail(format!("write to redis failed: {err}"));
                        return;
                    }
                }
            }
            let mut state = self.lock();
            if written < batch.len() {
                // The rest goes out first, then what was queued since.
                let mut rest = batch.split_off(written);
                rest.extend_from_slice(&state.out);
                state.out = rest;
                drop(state);
                self.io.notify_one();
                return;
            }
            batch.clear();
            if state.out.is_empty() || state.broken.is_some() {
                state.writing = false;
                state.spare = batch;
                return;
            }
            std::mem::swap(&mut state.out, &mut batch);
            written = 0;
        }
    }

    /// The writer task's turn: write until nothing is queued.
    async fn flush(&self, writer: &mut Writer) -> io::Result<()> {
        loop {
            let batch = {
                let mut state = self.lock();
                if state.out.is_empty() || state.broken.is_some() {
                    state.writing = false;
                    return Ok(());
                }
                std::mem::take(&mut state.out)
            };
            match writer {
                Writer::Tcp(half) => {
                    let mut written = 0;
                    while written < batch.len() {
                        half.writable().await?;
                        match half.try_write(&batch[written..]) {
                            Ok(n) => written += n,
                            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                            Err(err) => return Err(err),
                        }
                    }
                }
                Writer::Stream(stream) => {
                    stream.write_all(&batch).await?;
                    stream.flush().await?;
                }
            }
        }
    }

    /// Hand out every complete reply at the start of `buffer`, and drop the
    /// bytes they took.
    fn deliver(
        &self,
        buffer: &mut Vec<u8>,
        messages: &Option<mpsc::UnboundedSender<Vec<u8>>>,
    ) -> Result<(), String> {
        let mut used = 0;
        let mut replies = Vec::new();
        loop {
            match resp::parse(&buffer[used..]) {
                Ok((reply, size)) => {
                    used += size;
                    match (messages, reply) {
                        (Some(messages), Reply::Array(items)) if is_message(&items) => {
                            if let Some(Reply::Bulk(payload)) = items.into_iter().nth(2) {
                                let _ = messages.send(payload);
                            }
                        }
                        (_, reply) => replies.push(reply),
                    }
                }
                Err(ParseError::Incomplete) => break,
                Err(ParseError::Invalid(why)) => {
                    return Err(format!("bad reply from redis: {why}"));
                }
            }
        }
        buffer.drain(..used);
        if replies.is_empty() {
            return Ok(());
        }
        let waiters: Vec<Waiter> = {
            let mut state = self.lock();
            if state.waiting.len() < replies.len() {
                return Err("redis sent a reply to no command".to_owned());
            }
            state.waiting.drain(..replies.len()).collect()
        };
        for (waiter, reply) in waiters.into_iter().zip(replies) {
            // A caller that gave up has dropped its receiver.
            let _ = waiter.send(Ok(reply));
        }
        Ok(())
    }
}

/// A published message: `["message", channel, payload]`.
fn is_message(items: &[Reply]) -> bool {
    items.len() == 3 && matches!(&items[0], Reply::Bulk(kind) if kind == b"message")
}

/// The reader task: replies in, until the connection fails or is closed.
async fn read_replies<R>(
    shared: Arc<Shared>,
    mut reader: R,
    messages: Option<mpsc::UnboundedSender<Vec<u8>>>,
) where
    R: AsyncRead + Unpin,
{
    let mut buffer = Vec::with_capacity(16 * 1024);
    let why = loop {
        if buffer.capacity() - buffer.len() < 4096 {
            buffer.reserve(16 * 1024);
        }
        tokio::select! {
            () = shared.closed.cancelled() => return,
            read = reader.read_buf(&mut buffer) => match read {
                Ok(0) => break "redis closed the connection".to_owned(),
                Ok(_) => {
                    if let Err(why) = shared.deliver(&mut buffer, &messages) {
                        break why;
                    }
                }
                Err(err) => break format!("read from redis failed: {err}"),
            },
        }
    };
    shared.fail(why);
}

/// The writer task: commands that a caller could not write without
/// waiting (all of them on TLS), until the connection fails or is closed.
async fn write_backlog(shared: Arc<Shared>, mut writer: Writer) {
    loop {
        tokio::select! {
            () = shared.closed.cancelled() => break,
            () = shared.io.notified() => {
                // A server that stopped reading must not keep this task
                // (and the bytes it holds) alive after the close.
                let flushed = tokio::select! {
                    () = shared.closed.cancelled() => break,
                    flushed = shared.flush(&mut writer) => flushed,
                };
                if let Err(err) = flushed {
                    shared.fail(format!("write to redis failed: {err}"));
                    break;
                }
            }
        }
    }
    if let Writer::Stream(stream) = &mut writer {
        // A polite TLS close, if the server takes it at once.
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::resp::Command;
    use tokio::net::TcpListener;

    /// A server that answers each command line it reads with `:<n>`, its
    /// count, after reading all of a batch.
    async fn counting_server() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buffer = Vec::new();
            let mut count = 0;
            loop {
                let mut chunk = [0u8; 4096];
                let n = socket.read(&mut chunk).await.unwrap();
                if n == 0 {
                    return;
                }
                buffer.extend_from_slice(&chunk[..n]);
                let mut answer = Vec::new();
                while let Ok((_, used)) = resp::parse(&buffer) {
                    buffer.drain(..used);
                    count += 1;
                    answer.extend_from_slice(format!(":{count}\r\n").as_bytes());
                }
                socket.write_all(&answer).await.unwrap();
            }
        });
        (addr, task)
    }

    #[tokio::test]
    async fn concurrent_calls_get_their_own_replies_in_order() {
        let (addr, _server) = counting_server().await;
        let (pipe, _) = Pipe::tcp(TcpStream::connect(addr).await.unwrap(), false);
        let ping = Command::new("PING").encode();
        let mut calls = Vec::new();
        for _ in 0..200 {
            calls.push(pipe.send(&ping).unwrap());
        }
        for (i, call) in calls.into_iter().enumerate() {
            assert_eq!(call.await.unwrap().unwrap(), Reply::Int(i as i64 + 1));
        }
    }

    /// A peer that writes each reply whole before it reads the next command
    /// (as some proxies do) must not stall a connection whose writes and
    /// reads both fill the socket buffers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn large_batches_flow_when_the_peer_answers_before_reading_on() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buffer = Vec::new();
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                while let Ok((_, used)) = resp::parse(&buffer) {
                    let mut reply = Vec::new();
                    resp::bulk(&mut reply, &buffer[..used]);
                    buffer.drain(..used);
                    socket.write_all(&reply).await.unwrap();
                }
                let n = socket.read(&mut chunk).await.unwrap();
                if n == 0 {
                    return;
                }
                buffer.extend_from_slice(&chunk[..n]);
            }
        });
        let (pipe, _) = Pipe::tcp(TcpStream::connect(addr).await.unwrap(), false);
        let echo = Command::new("ECHO").arg(vec![b'x'; 4096]).encode();
        let calls: Vec<_> = (0..5_000).map(|_| pipe.send(&echo).unwrap()).collect();
        let all = async {
            for call in calls {
                assert!(matches!(call.await, Ok(Ok(Reply::Bulk(_)))));
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(30), all)
            .await
            .expect("the connection stalled");
    }

    #[tokio::test]
    async fn a_caller_that_gives_up_does_not_shift_the_others() {
        let (addr, _server) = counting_server().await;
        let (pipe, _) = Pipe::tcp(TcpStream::connect(addr).await.unwrap(), false);
        let ping = Command::new("PING").encode();
        let abandoned = pipe.send(&ping).unwrap();
        drop(abandoned);
        assert_eq!(pipe.call(&ping).await.unwrap(), Reply::Int(2));
    }

    #[tokio::test]
    async fn a_closed_connection_fails_waiting_calls_and_refuses_new_ones() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut chunk = [0u8; 64];
            let _ = socket.read(&mut chunk).await;
            // Closed without an answer.
        });
        let (pipe, _) = Pipe::tcp(TcpStream::connect(addr).await.unwrap(), false);
        let ping = Command::new("PING").encode();
        let lost = pipe.call(&ping).await;
        assert!(matches!(lost, Err(CallError::Lost(_))), "{lost:?}");
        server.await.unwrap();
        assert!(pipe.is_broken());
        assert!(matches!(pipe.call(&ping).await, Err(CallError::NotSent(_))));
    }
}
