//! Workloads for tests and benchmarks, in one small binary so tests control exactly what runs.
//!
//! - `busy SECONDS [CPU]`: spin for SECONDS (pinned to CPU if given), print `done`, then stay
//!   alive and idle until stdin closes, so ground truth can still be read from /proc.
//! - `tick MILLIS [CPU]`: sleep MILLIS in a loop (a nearly idle task that wakes up) until stdin
//!   closes.
//! - `pingpong SECONDS [CPU]`: two processes bounce a byte over two pipes for SECONDS (a
//!   context-switch storm, both pinned to CPU if given) and print round trips per second.
//! - `net BYTES`: in a network namespace of its own (loopback only), send BYTES over TCP and
//!   BYTES in 1000-byte UDP datagrams to itself, then print the namespace's loopback counters
//!   (`lo RX_BYTES RX_PACKETS TX_BYTES TX_PACKETS`, from /proc/self/net/dev) and `done`, and
//!   stay alive until stdin closes. All of that traffic belongs to the process's cgroup.
//! - `tcpsend ADDR BYTES`: connect to ADDR, send BYTES, close, print `done`, stay alive until
//!   stdin closes.
//! - `tcpsink PORT`: accept TCP connections on PORT and read them to the end, until stdin closes.
//! - `reread SECONDS FILE [CPU]`: read FILE from start to end over and over for SECONDS, print `done`,
//!   then stay alive until stdin closes. In a cgroup whose memory limit is below the file's
//!   size, every pass evicts page cache it charged itself: steady memcg reclaim.

use std::{
    io::{Read, Write},
    time::{Duration, Instant},
};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let number = |i: usize| args.get(i).and_then(|a| a.parse::<u64>().ok());
    let result = match (args.get(1).map(String::as_str), number(2)) {
        (Some("busy"), Some(seconds)) => busy(seconds, number(3)),
        (Some("tick"), Some(millis)) => tick(millis, number(3)),
        (Some("pingpong"), Some(seconds)) => pingpong(seconds, number(3)),
        (Some("reread"), Some(seconds)) => match args.get(3) {
            Some(file) => pin(number(4)).and_then(|()| reread(seconds, file)),
            None => Err("reread needs a FILE".into()),
        },
        (Some("net"), Some(bytes)) => net(bytes),
        (Some("tcpsend"), _) => match (args.get(2), number(3)) {
            (Some(addr), Some(bytes)) => tcpsend(addr, bytes),
            _ => Err("tcpsend needs ADDR BYTES".into()),
        },
        (Some("tcpsink"), Some(port)) => tcpsink(port),
        _ => Err(
            "usage: ballast-load busy SECONDS [CPU] | tick MILLIS [CPU] | \
                  pingpong SECONDS [CPU] | reread SECONDS FILE [CPU] | net BYTES | \
                  tcpsend ADDR BYTES | tcpsink PORT"
                .into(),
        ),
    };
    if let Err(err) = result {
        eprintln!("ballast-load: {err}");
        std::process::exit(2);
    }
}

fn pin(cpu: Option<u64>) -> Result<(), String> {
    let Some(cpu) = cpu else { return Ok(()) };
    let cpu = usize::try_from(cpu).map_err(|e| e.to_string())?;
    // SAFETY: cpu_set_t is plain data; zeroed is a valid empty set and CPU_SET stays in bounds
    // for any CPU number below CPU_SETSIZE, which sched_setaffinity then validates.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(format!(
                "pinning to CPU {cpu}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

fn wait_for_stdin_close() {
    let mut sink = [0u8; 64];
    let mut stdin = std::io::stdin();
    while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
}

fn busy(seconds: u64, cpu: Option<u64>) -> Result<(), String> {
    pin(cpu)?;
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut x: u64 = 1;
    while Instant::now() < end {
        for _ in 0..10_000 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
    println!("done");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    wait_for_stdin_close();
    Ok(())
}

fn done_then_wait() -> Result<(), String> {
    println!("done");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    wait_for_stdin_close();
    Ok(())
}

fn net(bytes: u64) -> Result<(), String> {
    use std::net::{TcpListener, TcpStream, UdpSocket};
    // SAFETY: unshare only changes this (single-threaded, so far) process's namespaces.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(format!(
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        ));
    }
    loopback_up()?;
    let err = |e: std::io::Error| e.to_string();
    let listener = TcpListener::bind("127.0.0.1:0").map_err(err)?;
    let addr = listener.local_addr().map_err(err)?;
    let sink = std::thread::spawn(move || -> std::io::Result<u64> {
        let (mut conn, _) = listener.accept()?;
        std::io::copy(&mut conn, &mut std::io::sink())
    });
    let mut conn = TcpStream::connect(addr).map_err(err)?;
    send_bytes(&mut conn, bytes)?;
    drop(conn);
    let received = sink
        .join()
        .map_err(|_| "sink panicked".to_string())?
        .map_err(err)?;
    if received != bytes {
        return Err(format!("TCP sink got {received} of {bytes} bytes"));
    }
    let rx = UdpSocket::bind("127.0.0.1:0").map_err(err)?;
    let tx = UdpSocket::bind("127.0.0.1:0").map_err(err)?;
    let datagram = [0x42u8; 1000];
    let mut buffer = [0u8; 2048];
    for _ in 0..bytes / 1000 {
        tx.send_to(&datagram, rx.local_addr().map_err(err)?)
            .map_err(err)?;
        rx.recv(&mut buffer).map_err(err)?;
    }
    let dev = std::fs::read_to_string("/proc/self/net/dev").map_err(err)?;
    let lo = dev
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("lo:"))
        .ok_or("no lo in /proc/self/net/dev")?;
    let fields: Vec<&str> = lo.split_whitespace().collect();
    // rx: bytes packets errs drop fifo frame compressed multicast; tx: bytes packets ...
    println!("lo {} {} {} {}", fields[0], fields[1], fields[8], fields[9]);
    done_then_wait()
}

/// Brings the loopback interface of the current network namespace up.
fn loopback_up() -> Result<(), String> {
    // SAFETY: a plain socket/ioctl sequence on a zeroed ifreq naming "lo"; the descriptor is
    // closed before returning.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
        let mut request: libc::ifreq = std::mem::zeroed();
        for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo\0") {
            *slot = *byte as libc::c_char;
        }
        let ok = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut request) == 0 && {
            request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            libc::ioctl(fd, libc::SIOCSIFFLAGS, &request) == 0
        };
        let error = std::io::Error::last_os_error();
        libc::close(fd);
        if ok {
            Ok(())
        } else {
            Err(format!("bringing lo up: {error}"))
        }
    }
}

fn send_bytes(conn: &mut impl Write, bytes: u64) -> Result<(), String> {
    let chunk = [0x42u8; 64 * 1024];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        conn.write_all(&chunk[..n]).map_err(|e| e.to_string())?;
        left -= n as u64;
    }
    Ok(())
}

fn tcpsend(addr: &str, bytes: u64) -> Result<(), String> {
    let mut conn = std::net::TcpStream::connect(addr).map_err(|e| format!("{addr}: {e}"))?;
    send_bytes(&mut conn, bytes)?;
    conn.shutdown(std::net::Shutdown::Write)
        .map_err(|e| e.to_string())?;
    // Wait for the peer's close, so every byte was acknowledged (retransmissions included).
    let mut sink = [0u8; 64];
    while matches!(conn.read(&mut sink), Ok(n) if n > 0) {}
    done_then_wait()
}

fn tcpsink(port: u64) -> Result<(), String> {
    let listener =
        std::net::TcpListener::bind(("0.0.0.0", port as u16)).map_err(|e| e.to_string())?;
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let _ = std::io::copy(&mut conn, &mut std::io::sink());
        }
    });
    println!("ready");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    wait_for_stdin_close();
    Ok(())
}

fn reread(seconds: u64, file: &str) -> Result<(), String> {
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut buffer = vec![0u8; 1 << 20];
    while Instant::now() < end {
        let mut input = std::fs::File::open(file).map_err(|e| format!("{file}: {e}"))?;
        while input.read(&mut buffer).map_err(|e| e.to_string())? > 0 {}
    }
    println!("done");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    wait_for_stdin_close();
    Ok(())
}

fn tick(millis: u64, cpu: Option<u64>) -> Result<(), String> {
    pin(cpu)?;
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        wait_for_stdin_close();
        let _ = tx.send(());
    });
    println!("ready");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    while rx.recv_timeout(Duration::from_millis(millis)).is_err() {}
    Ok(())
}

fn pingpong(seconds: u64, cpu: Option<u64>) -> Result<(), String> {
    pin(cpu)?;
    let mut there = [0i32; 2];
    let mut back = [0i32; 2];
    // SAFETY: pipe() writes two fds into a valid 2-element array.
    let there_failed = unsafe { libc::pipe(there.as_mut_ptr()) } != 0;
    // SAFETY: as above.
    if there_failed || unsafe { libc::pipe(back.as_mut_ptr()) } != 0 {
        return Err(format!("pipe: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: the child only uses read/write/_exit on inherited fds (async-signal-safe).
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    let mut byte = [0u8; 1];
    if child == 0 {
        // SAFETY: closing the ends this side does not use, so the parent's close reaches us as EOF.
        unsafe {
            libc::close(there[1]);
            libc::close(back[0]);
        }
        loop {
            // SAFETY: valid fds and a 1-byte buffer; the child exits when the parent closes.
            let n = unsafe { libc::read(there[0], byte.as_mut_ptr().cast(), 1) };
            if n != 1 {
                // SAFETY: terminate the child without running the parent's destructors.
                unsafe { libc::_exit(0) };
            }
            // SAFETY: as above.
            unsafe { libc::write(back[1], byte.as_ptr().cast(), 1) };
        }
    }
    // SAFETY: the parent does not use these ends.
    unsafe {
        libc::close(there[0]);
        libc::close(back[1]);
    }
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let mut round_trips: u64 = 0;
    while Instant::now() < end {
        for _ in 0..1000 {
            // SAFETY: valid fds and a 1-byte buffer.
            unsafe {
                libc::write(there[1], byte.as_ptr().cast(), 1);
                libc::read(back[0], byte.as_mut_ptr().cast(), 1);
            }
        }
        round_trips += 1000;
    }
    let elapsed = start.elapsed().as_secs_f64();
    // SAFETY: closing our write end ends the child's loop; waitpid reaps it.
    unsafe {
        libc::close(there[1]);
        libc::waitpid(child, std::ptr::null_mut(), 0);
    }
    println!("{:.0}", round_trips as f64 / elapsed);
    Ok(())
}
