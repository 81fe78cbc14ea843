//! udp-sink on the host, as a peer on the network would meet it: hostile
//! datagrams first (sequence numbers near 2^32, offsets near 2^63, offset +
//! length overflowing, data past --max-bytes, end markers with huge totals,
//! short and garbage payloads), then a real stream with duplicates. It runs
//! under a 1 GiB address-space limit (RLIMIT_AS, `ulimit -v`): the old sink
//! sized a Vec by the sequence number and died of it. The file must be the
//! stream exactly, and the summary must count what was refused.

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The address-space limit the sink runs under, in KiB (1 GiB).
const LIMIT_KIB: u64 = 1 << 20;
/// Data bytes per datagram, as the forwarder sends them at MTU 1500.
const PAYLOAD: usize = 1456;

fn stream_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn datagram(seq: u32, offset: u64, data: &[u8]) -> Vec<u8> {
    let mut d = examples::dmaf::header(seq, offset).to_vec();
    d.extend_from_slice(data);
    d
}

/// udp-sink under the address-space limit, and the port it listens on.
struct Sink {
    child: Child,
    port: u16,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Sink {
    fn start(args: &[&str]) -> Sink {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!("ulimit -v {LIMIT_KIB} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_udp-sink"))
            .args(["--port", "0"])
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start udp-sink");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("udp-sink prints a line");
        let port = line
            .trim()
            .strip_prefix("udp-sink: listening on port ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("not a listening line: {line:?}"));
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id()))
            .expect("the sink's limits");
        let address_space = limits
            .lines()
            .find(|l| l.starts_with("Max address space"))
            .expect("an address-space line");
        assert!(
            address_space.contains(&(LIMIT_KIB * 1024).to_string()),
            "the sink runs under the 1 GiB limit: {address_space}"
        );
        Sink {
            child,
            port,
            stdout,
        }
    }

    /// Waits (30 s at most) for the exit; returns its status and the JSON summary.
    fn finish(mut self) -> (i32, serde_json::Value) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait for udp-sink") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("udp-sink did not finish within 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut self.stdout, &mut rest).expect("read stdout");
        let json = rest
            .lines()
            .find(|l| l.starts_with('{'))
            .unwrap_or_else(|| panic!("no JSON summary ({status}):\n{rest}"));
        let code = status
            .code()
            .unwrap_or_else(|| panic!("udp-sink was killed by a signal: {status}\n{rest}"));
        (
            code,
            serde_json::from_str(json).expect("the JSON summary parses"),
        )
    }
}

fn send_paced(sock: &UdpSocket, port: u16, datagrams: &[Vec<u8>]) {
    for (i, d) in datagrams.iter().enumerate() {
        sock.send_to(d, ("127.0.0.1", port))
            .expect("send a datagram");
        if i % 64 == 63 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

#[test]
fn hostile_datagrams_then_a_real_stream_give_the_exact_file_in_bounded_memory() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let out = dir.path().join("sink.bin");
    let data = stream_bytes((3 << 20) + 777, 0x5eed);
    let max_bytes = data.len() as u64 + 4096;
    let sink = Sink::start(&[
        "--output",
        out.to_str().expect("a UTF-8 path"),
        "--max-bytes",
        &max_bytes.to_string(),
        "--idle-seconds",
        "10",
        "--json",
    ]);
    let sock = UdpSocket::bind("127.0.0.1:0").expect("a UDP socket");
    let out_of_range = [
        datagram(0xFFFF_FFF0, 0, &[0xee; 1000]), // once sized the seen-list: 4 GiB
        datagram(u32::MAX, 1000, &[0xee; 1000]),
        datagram(1, (1 << 63) - 512, &[0xee; 1000]), // once ended the sink with EFBIG
        datagram(2, u64::MAX - 100, &[0xee; 1000]),  // offset + length overflows
        datagram(3, max_bytes - 10, &[0xee; 100]),   // past --max-bytes
        datagram(4, u64::MAX, &[]),                  // end markers that set the file's length
        datagram(7, 1 << 62, &[]),
        datagram(5, max_bytes + 1, &[]),
    ];
    let malformed = [
        Vec::new(),
        b"DMAF\0\0".to_vec(),
        b"DMAX\0\0\0\0\0\0\0\0\0\0\0\0payload".to_vec(),
        stream_bytes(1200, 0xbad),
    ];
    send_paced(&sock, sink.port, &out_of_range);
    send_paced(&sock, sink.port, &malformed);
    // The real stream, every 13th datagram twice, the end marker last.
    let mut real = Vec::new();
    for (seq, chunk) in data.chunks(PAYLOAD).enumerate() {
        real.push(datagram(seq as u32, (seq * PAYLOAD) as u64, chunk));
        if seq % 13 == 0 {
            real.push(real.last().expect("just pushed").clone());
        }
    }
    let n = data.len().div_ceil(PAYLOAD);
    real.push(datagram(n as u32, data.len() as u64, &[]));
    send_paced(&sock, sink.port, &real);
    let (code, s) = sink.finish();
    assert_eq!(code, 0, "complete: {s}");
    assert_eq!(s["complete"], true, "{s}");
    assert_eq!(s["total"].as_u64(), Some(data.len() as u64), "{s}");
    assert_eq!(s["datagrams"].as_u64(), Some(n as u64), "{s}");
    assert_eq!(s["duplicates"].as_u64(), Some(n.div_ceil(13) as u64), "{s}");
    assert_eq!(
        s["out_of_range"].as_u64(),
        Some(out_of_range.len() as u64),
        "{s}"
    );
    assert_eq!(s["malformed"].as_u64(), Some(malformed.len() as u64), "{s}");
    assert_eq!(
        s["refused"].as_u64(),
        Some((out_of_range.len() + malformed.len()) as u64),
        "{s}"
    );
    assert_eq!(s["missing"].as_u64(), Some(0), "{s}");
    let peak = s["vm_peak_kib"]
        .as_u64()
        .expect("the sink reports its peak");
    assert!(peak < LIMIT_KIB, "peak address space {peak} KiB");
    let got = std::fs::read(&out).expect("read the sink's file");
    assert_eq!(
        got.len(),
        data.len(),
        "the file is exactly the stream's length"
    );
    assert!(got == data, "the file holds exactly the stream's bytes");
}

#[test]
fn an_incomplete_stream_lists_what_is_missing_and_exits_1() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let out = dir.path().join("partial.bin");
    let data = stream_bytes(100 * PAYLOAD, 0x77);
    let sink = Sink::start(&[
        "--output",
        out.to_str().expect("a UTF-8 path"),
        "--idle-seconds",
        "0.5",
        "--json",
    ]);
    let sock = UdpSocket::bind("127.0.0.1:0").expect("a UDP socket");
    let lost = [3usize, 50, 99];
    let mut datagrams: Vec<Vec<u8>> = data
        .chunks(PAYLOAD)
        .enumerate()
        .filter(|(seq, _)| !lost.contains(seq))
        .map(|(seq, chunk)| datagram(seq as u32, (seq * PAYLOAD) as u64, chunk))
        .collect();
    datagrams.push(datagram(100, data.len() as u64, &[]));
    send_paced(&sock, sink.port, &datagrams);
    let (code, s) = sink.finish();
    assert_eq!(code, 1, "incomplete: {s}");
    assert_eq!(s["complete"], false, "{s}");
    assert_eq!(s["missing"].as_u64(), Some(3), "{s}");
    assert_eq!(s["first_missing"], serde_json::json!(lost), "{s}");
    let got = std::fs::read(&out).expect("read the sink's file");
    assert_eq!(
        got.len(),
        98 * PAYLOAD + PAYLOAD,
        "the file ends where the last datagram received (seq 98) ends"
    );
}
