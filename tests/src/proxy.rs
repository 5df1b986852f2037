//! A TCP proxy that can go silent: it forwards every connection to one address until
//! [`SilentProxy::silence`], after which the connections it carries stay open but pass nothing
//! more, as behind a middlebox that forgot them; connections opened later pass as before.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A running proxy; dropping it closes every connection it holds.
#[derive(Debug)]
pub struct SilentProxy {
    addr: SocketAddr,
    silences: watch::Sender<u64>,
    closed: CancellationToken,
    accepting: JoinHandle<()>,
}

impl SilentProxy {
    /// Starts a proxy to `target` on a free port.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let addr = listener.local_addr().expect("a bound address");
        let (silences, _) = watch::channel(0);
        let closed = CancellationToken::new();
        let accepting = tokio::spawn({
            let silences = silences.subscribe();
            let closed = closed.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let mut silenced = silences.clone();
                    silenced.mark_unchanged();
                    tokio::spawn(forward(client, target, silenced, closed.clone()));
                }
            }
        });
        Self {
            addr,
            silences,
            closed,
            accepting,
        }
    }

    /// Returns the proxy's URL, for HTTP and gRPC clients.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Silences every connection open now.
    pub fn silence(&self) {
        self.silences.send_modify(|count| *count += 1);
    }
}

impl Drop for SilentProxy {
    fn drop(&mut self) {
        self.accepting.abort();
        self.closed.cancel();
    }
}

/// Carries `client` to `target` until either side closes, or until the proxy silences it: then
/// both stay open, passing nothing, until the proxy is dropped.
async fn forward(
    mut client: TcpStream,
    target: SocketAddr,
    mut silenced: watch::Receiver<u64>,
    closed: CancellationToken,
) {
    let Ok(mut upstream) = TcpStream::connect(target).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => return,
        _ = silenced.changed() => {}
        () = closed.cancelled() => return,
    }
    closed.cancelled().await;
}
