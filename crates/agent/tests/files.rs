//! File requests over the real agent binary.

mod common;

use common::Agent;
use zygote_proto::agent::{ErrorKind, Msg, CHUNK};

fn upload(a: &mut Agent, path: &str, data: &[u8], mode: Option<u32>) -> Msg {
    let id = a.id();
    a.send(
        id,
        &Msg::WriteFile {
            path: path.into(),
            mode,
            parents: true,
        },
        &[],
    );
    for c in data.chunks(CHUNK) {
        a.send(id, &Msg::Data, c);
    }
    a.send(id, &Msg::DataEnd, &[]);
    a.next_for(id).msg
}

fn download(a: &mut Agent, path: &str) -> Result<(Vec<u8>, u64, u32), Box<Msg>> {
    let id = a.id();
    a.send(id, &Msg::ReadFile { path: path.into() }, &[]);
    let (size, mode) = match a.next_for(id).msg {
        Msg::ReadStart { size, mode } => (size, mode),
        m => return Err(Box::new(m)),
    };
    let mut data = Vec::new();
    loop {
        let f = a.next_for(id);
        match f.msg {
            Msg::Data => data.extend_from_slice(&f.payload),
            Msg::DataEnd => return Ok((data, size, mode)),
            m => return Err(Box::new(m)),
        }
    }
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[test]
fn four_mib_round_trip_is_byte_exact() {
    let mut a = Agent::start();
    let dir = common::tempdir("rt");
    let path = dir.join("sub/dir/blob.bin");
    let path = path.to_str().unwrap();
    let data = random_bytes(4 * 1024 * 1024 + 17);
    assert_eq!(upload(&mut a, path, &data, Some(0o600)), Msg::Ok);
    let on_disk = std::fs::read(path).unwrap();
    assert!(on_disk == data, "file on disk differs");
    let (got, size, mode) = download(&mut a, path).unwrap();
    assert_eq!(size, data.len() as u64);
    assert_eq!(mode, 0o600);
    assert!(got == data, "downloaded bytes differ");
    // No temporary files left behind.
    let names: Vec<_> = std::fs::read_dir(dir.join("sub/dir"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(names.len(), 1);
}

#[test]
fn empty_file_and_overwrite() {
    let mut a = Agent::start();
    let dir = common::tempdir("ow");
    let p = dir.join("f.txt");
    let p = p.to_str().unwrap();
    assert_eq!(upload(&mut a, p, b"first version", None), Msg::Ok);
    assert_eq!(upload(&mut a, p, b"", None), Msg::Ok);
    let (got, size, mode) = download(&mut a, p).unwrap();
    assert_eq!((got.len(), size, mode), (0, 0, 0o644));
}

#[test]
fn stat_list_remove() {
    let mut a = Agent::start();
    let dir = common::tempdir("slr");
    let d = dir.to_str().unwrap();
    for name in ["b.txt", "a.txt", "c/inner.txt"] {
        assert_eq!(
            upload(&mut a, &format!("{d}/{name}"), b"12345", None),
            Msg::Ok
        );
    }
    match a.call(Msg::Stat {
        path: format!("{d}/a.txt"),
    }) {
        Msg::StatOk(s) => {
            assert_eq!((s.size, s.kind.as_str()), (5, "file"));
            assert_eq!(s.mode & 0o777, 0o644);
            assert!(s.mtime > 1_600_000_000);
        }
        m => panic!("{m:?}"),
    }
    match a.call(Msg::List { path: d.into() }) {
        Msg::ListOk { entries } => {
            let names: Vec<_> = entries
                .iter()
                .map(|e| (e.name.as_str(), e.kind.as_str()))
                .collect();
            assert_eq!(names, [("a.txt", "file"), ("b.txt", "file"), ("c", "dir")]);
        }
        m => panic!("{m:?}"),
    }
    // A non-empty directory needs recursive.
    match a.call(Msg::Remove {
        path: format!("{d}/c"),
        recursive: false,
    }) {
        Msg::Error(e) => assert_eq!(e.kind, ErrorKind::BadRequest, "{}", e.message),
        m => panic!("{m:?}"),
    }
    assert_eq!(
        a.call(Msg::Remove {
            path: format!("{d}/c"),
            recursive: true
        }),
        Msg::Ok
    );
    assert_eq!(
        a.call(Msg::Remove {
            path: format!("{d}/a.txt"),
            recursive: false
        }),
        Msg::Ok
    );
    match a.call(Msg::Stat {
        path: format!("{d}/a.txt"),
    }) {
        Msg::Error(e) => {
            assert_eq!(e.kind, ErrorKind::NotFound);
            assert!(e.message.contains("a.txt"));
        }
        m => panic!("{m:?}"),
    }
}

#[test]
fn relative_and_dotdot_paths_are_refused() {
    let mut a = Agent::start();
    for p in ["relative/path", "/tmp/../etc/passwd", ""] {
        for msg in [
            Msg::Stat { path: p.into() },
            Msg::List { path: p.into() },
            Msg::ReadFile { path: p.into() },
            Msg::Remove {
                path: p.into(),
                recursive: true,
            },
        ] {
            match a.call(msg) {
                Msg::Error(e) => {
                    assert_eq!(e.kind, ErrorKind::BadRequest);
                    assert!(
                        e.message.contains("absolute path without `..`"),
                        "{}",
                        e.message
                    );
                    assert!(e.message.contains(&format!("`{p}`")), "{}", e.message);
                }
                m => panic!("{m:?}"),
            }
        }
        // An upload to a refused path is refused once; its data frames are swallowed.
        match upload(&mut a, p, b"data", None) {
            Msg::Error(e) => assert_eq!(e.kind, ErrorKind::BadRequest),
            m => panic!("{m:?}"),
        }
    }
    assert_eq!(a.call(Msg::Ping), Msg::Pong);
}

#[test]
fn read_errors_map_errno() {
    let mut a = Agent::start();
    let dir = common::tempdir("err");
    match download(&mut a, "/no/such/file") {
        Err(m) if matches!(&*m, Msg::Error(e) if e.kind == ErrorKind::NotFound) => {}
        r => panic!("{r:?}"),
    }
    match download(&mut a, dir.to_str().unwrap()) {
        Err(m) if matches!(&*m, Msg::Error(e) if e.kind == ErrorKind::BadRequest) => {}
        r => panic!("{r:?}"),
    }
    let f = dir.join("file");
    std::fs::write(&f, b"x").unwrap();
    match a.call(Msg::List {
        path: f.to_str().unwrap().into(),
    }) {
        Msg::Error(e) => assert_eq!(e.kind, ErrorKind::BadRequest, "{}", e.message),
        m => panic!("{m:?}"),
    }
}
