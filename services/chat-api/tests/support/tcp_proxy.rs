//! A TCP proxy in front of PostgreSQL that tests can break and mend: cut
//! every open connection (as a database restart does), refuse new ones (as a
//! database that is down does: the port is closed), and come back on the
//! same port, without touching the real server other tests share.

use std::net::SocketAddr;
use std::sync::Mutex;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Forwards `127.0.0.1:<port>` to a target. Stops when dropped.
pub struct TcpProxy {
    pub addr: SocketAddr,
    target: SocketAddr,
    /// Bumped to cut every open connection.
    generation: watch::Sender<u64>,
    /// The accept loop, which owns the listening socket; `None` while down.
    acceptor: Mutex<Option<JoinHandle<()>>>,
}

impl TcpProxy {
    pub async fn start(target: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let proxy = TcpProxy { addr, target, generation: watch::channel(0).0, acceptor: Mutex::new(None) };
        proxy.serve(listener);
        proxy
    }

    fn serve(&self, listener: TcpListener) {
        let (target, generation) = (self.target, self.generation.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else { continue };
                let mut cut = generation.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        *self.acceptor.lock().unwrap() = Some(task);
    }

    /// Closes every open connection; new ones are still accepted.
    pub fn cut(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// Closes every open connection and the port: new connections are refused.
    pub fn down(&self) {
        if let Some(task) = self.acceptor.lock().unwrap().take() {
            task.abort();
        }
        self.cut();
    }

    /// Listens on the same port again.
    pub async fn up(&self) {
        let listener = TcpListener::bind(self.addr).await.expect("rebind proxy port");
        self.serve(listener);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.down();
    }
}
