//! The ceiling the benchmarks compare against: a consumer that speaks RESP itself over std
//! `TcpStream`s (no client library, no async runtime), one thread per connection. Each
//! loop reads `XREADGROUP COUNT 100`, then writes in one go an `XADD` of every entry to the
//! output stream, one `XACK` for the batch and **the next `XREADGROUP`**, so a read is always
//! in flight behind the commit (prefetch). This is what Redis can do for consume →
//! republish → acknowledge with nothing else in the way.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Instant;

/// A RESP value (the subset Redis replies with to these commands).
#[derive(Debug)]
pub enum Resp {
    Simple(Vec<u8>),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Resp>>),
}

/// Appends a command as a RESP array of bulk strings.
pub fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// Reads one RESP value.
pub fn read(r: &mut impl BufRead) -> std::io::Result<Resp> {
    let mut line = Vec::with_capacity(64);
    r.read_until(b'\n', &mut line)?;
    if line.len() < 3 {
        return Err(std::io::Error::other("connection closed"));
    }
    let body = &line[1..line.len() - 2];
    let num = || -> i64 { std::str::from_utf8(body).unwrap().parse().unwrap() };
    Ok(match line[0] {
        b'+' => Resp::Simple(body.to_vec()),
        b'-' => Resp::Error(String::from_utf8_lossy(body).into_owned()),
        b':' => Resp::Int(num()),
        b'$' => {
            let n = num();
            if n < 0 {
                Resp::Bulk(None)
            } else {
                let mut buf = vec![0u8; n as usize + 2];
                std::io::Read::read_exact(r, &mut buf)?;
                buf.truncate(n as usize);
                Resp::Bulk(Some(buf))
            }
        }
        b'*' => {
            let n = num();
            if n < 0 {
                Resp::Array(None)
            } else {
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(read(r)?);
                }
                Resp::Array(Some(items))
            }
        }
        other => return Err(std::io::Error::other(format!("bad RESP type {other}"))),
    })
}

/// (entry id, flat field/value list) of every entry in an XREADGROUP reply.
pub fn entries(reply: Resp) -> Vec<(Vec<u8>, Vec<Vec<u8>>)> {
    let Resp::Array(Some(streams)) = reply else {
        return vec![];
    };
    let mut out = vec![];
    for s in streams {
        let Resp::Array(Some(mut parts)) = s else {
            continue;
        };
        let Some(Resp::Array(Some(es))) = parts.pop() else {
            continue;
        };
        for e in es {
            let Resp::Array(Some(mut idf)) = e else {
                continue;
            };
            let fields = match idf.pop() {
                Some(Resp::Array(Some(f))) => f
                    .into_iter()
                    .filter_map(|v| match v {
                        Resp::Bulk(Some(b)) => Some(b),
                        _ => None,
                    })
                    .collect(),
                _ => vec![],
            };
            if let Some(Resp::Bulk(Some(id))) = idf.pop() {
                out.push((id, fields));
            }
        }
    }
    out
}

/// One ceiling consumer on its own connection: returns how many entries it moved.
fn consumer(addr: &str, stream: &str, out_stream: &str, group: &str, name: &str) -> usize {
    let conn = TcpStream::connect(addr).expect("connect");
    conn.set_nodelay(true).unwrap();
    let mut w = conn.try_clone().unwrap();
    let mut r = BufReader::with_capacity(1 << 20, conn);
    let read_cmd = |buf: &mut Vec<u8>| {
        encode(
            buf,
            &[
                b"XREADGROUP",
                b"GROUP",
                group.as_bytes(),
                name.as_bytes(),
                b"COUNT",
                b"100",
                b"STREAMS",
                stream.as_bytes(),
                b">",
            ],
        )
    };
    let mut buf = Vec::with_capacity(1 << 20);
    read_cmd(&mut buf);
    w.write_all(&buf).unwrap();
    let mut moved = 0;
    loop {
        let batch = entries(read(&mut r).expect("read"));
        if batch.is_empty() {
            return moved;
        }
        buf.clear();
        let mut ack: Vec<&[u8]> = vec![b"XACK", stream.as_bytes(), group.as_bytes()];
        for (id, fields) in &batch {
            let mut args: Vec<&[u8]> = vec![b"XADD", out_stream.as_bytes(), b"*"];
            args.extend(fields.iter().map(Vec::as_slice));
            encode(&mut buf, &args);
            ack.push(id);
        }
        encode(&mut buf, &ack);
        // The next read goes out with the commit.
        read_cmd(&mut buf);
        w.write_all(&buf).unwrap();
        for _ in 0..=batch.len() {
            if let Resp::Error(e) = read(&mut r).expect("reply") {
                panic!("raw consumer: {e}");
            }
        }
        moved += batch.len();
    }
}

/// Drains `stream` through `conns` ceiling consumers of `group` (already created), each
/// republishing to `out_stream`. Returns (entries moved, seconds).
pub fn drain(port: u16, stream: &str, out_stream: &str, group: &str, conns: usize) -> (usize, f64) {
    let addr = format!("127.0.0.1:{port}");
    let start = Instant::now();
    let handles: Vec<_> = (0..conns)
        .map(|c| {
            let (addr, s, o, g) = (
                addr.clone(),
                stream.to_string(),
                out_stream.to_string(),
                group.to_string(),
            );
            std::thread::spawn(move || consumer(&addr, &s, &o, &g, &format!("raw{c}")))
        })
        .collect();
    let moved = handles.into_iter().map(|h| h.join().unwrap()).sum();
    (moved, start.elapsed().as_secs_f64())
}
