//! A TCP front for a fake upstream that resets its first connections: the
//! client's request is read, then the socket is closed with `SO_LINGER 0`
//! (a TCP RST, "connection reset by peer"); later connections are passed
//! through to the target untouched.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

pub struct FlakyFront {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    resets: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl FlakyFront {
    /// Resets the first `resets` connections, then forwards to `target` (`host:port`).
    pub async fn start(target: &str, resets: usize) -> FlakyFront {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind flaky front");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let target = target.to_owned();
        let left = Arc::new(AtomicUsize::new(resets));
        let done = Arc::new(AtomicUsize::new(0));
        let (left_task, done_task) = (left.clone(), done.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else { return };
                let reset = left_task.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
                let target = target.clone();
                let done = done_task.clone();
                tokio::spawn(async move {
                    if reset {
                        let mut buf = [0u8; 4096];
                        let _ = tokio::time::timeout(Duration::from_secs(2), client.read(&mut buf)).await;
                        let _ = client.set_zero_linger();
                        drop(client);
                        done.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    if let Ok(mut upstream) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
            }
        });
        FlakyFront { url, resets: done, task }
    }

    /// Connections reset so far.
    pub fn resets(&self) -> usize {
        self.resets.load(Ordering::SeqCst)
    }
}

impl Drop for FlakyFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}
