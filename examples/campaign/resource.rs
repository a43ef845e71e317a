//! The protected resource: a line-protocol TCP server in the controller
//! that accepts a write for a key only with a token at least as high as the
//! highest it accepted for that key, and logs every write either way.
//!
//! Request `W <key> <token> <worker> <hold>\n`, reply `OK\n` or
//! `STALE <highest>\n`.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use super::history::{Write, mono_ns};

#[derive(Default)]
struct State {
    highest: HashMap<String, u64>,
    log: Vec<Write>,
}

/// The server; its threads live as long as the process (the controller).
pub struct Resource {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl Resource {
    pub fn start() -> io::Result<Resource> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Arc::clone(&state);
        thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let shared = Arc::clone(&shared);
                thread::spawn(move || serve(conn, &shared));
            }
        });
        Ok(Resource { addr, state })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every write so far, in the order the resource decided them.
    pub fn log(&self) -> Vec<Write> {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .log
            .clone()
    }
}

fn serve(conn: TcpStream, state: &Mutex<State>) {
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    for line in BufReader::new(conn).lines() {
        let Ok(line) = line else { return };
        let parts: Vec<&str> = line.split(' ').collect();
        let reply = match parts.as_slice() {
            ["W", key, token, worker, hold] => {
                match (token.parse(), worker.parse(), hold.parse()) {
                    (Ok(token), Ok(worker), Ok(hold)) => {
                        let mut st = state.lock().unwrap_or_else(PoisonError::into_inner);
                        let top = st.highest.get(*key).copied().unwrap_or(0);
                        let accepted = token >= top;
                        if accepted {
                            st.highest.insert((*key).to_owned(), token);
                        }
                        st.log.push(Write {
                            key: (*key).to_owned(),
                            token,
                            worker,
                            hold,
                            at: mono_ns(),
                            accepted,
                        });
                        if accepted {
                            "OK\n".to_owned()
                        } else {
                            format!("STALE {top}\n")
                        }
                    }
                    _ => "ERR bad numbers\n".to_owned(),
                }
            }
            _ => "ERR bad request\n".to_owned(),
        };
        if out.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// A worker's connection to the resource.
pub struct Client {
    addr: SocketAddr,
    conn: Option<(BufReader<TcpStream>, TcpStream)>,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Client {
        Client { addr, conn: None }
    }

    /// Asks for a write; `Ok(true)` accepted, `Ok(false)` refused as stale.
    pub fn write(&mut self, key: &str, token: u64, worker: u32, hold: u64) -> io::Result<bool> {
        if self.conn.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2))?;
            s.set_nodelay(true)?;
            self.conn = Some((BufReader::new(s.try_clone()?), s));
        }
        let (reader, writer) = self.conn.as_mut().expect("connected above");
        let result = (|| {
            writer.write_all(format!("W {key} {token} {worker} {hold}\n").as_bytes())?;
            let mut reply = String::new();
            reader.read_line(&mut reply)?;
            match reply.trim_end() {
                "OK" => Ok(true),
                r if r.starts_with("STALE") => Ok(false),
                r => Err(io::Error::other(format!("resource said {r:?}"))),
            }
        })();
        if result.is_err() {
            self.conn = None;
        }
        result
    }
}
