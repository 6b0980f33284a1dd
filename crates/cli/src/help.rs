//! The manual: `zygote --help` (DESCRIPTION, ENVIRONMENT, EXAMPLES, EXIT STATUS),
//! each command's long help with examples, `zygote completions SHELL` and
//! `zygote man` (roff, generated from the same clap definitions).

use anyhow::Result;
use clap::{Args, CommandFactory};
use clap_complete::Shell;

/// The first paragraph of `zygote --help` and of the manual's DESCRIPTION.
const INTRO: &str = "\
zygote runs Linux sandboxes as QEMU microvm guests and is built around fork:
boot a parent once, warm it (imports, caches), snapshot it, and start any
number of children from it copy-on-write in a fraction of a boot.";

const DESCRIPTION: &str = "\
A root daemon (`zygote daemon`) owns every sandbox: its QEMU process, its
guest RAM (a memfd), its disk overlay and sockets, and a SQLite state
database under the home directory. Every other command is a client of the
daemon's REST API over its Unix socket (or TCP with a bearer token);
`image build` and `image ls` work on the home directory directly.

On the default socket, a command run as root starts a daemon when none
answers. Data goes to stdout; progress (on a terminal), logs and errors go
to stderr. Every command that prints something takes --json for one JSON
document. Guests run under KVM when the host has hardware virtualisation and
under TCG (software emulation) otherwise; `zygote doctor` says which and why.";

const ENVIRONMENT: &str = "\
ZYGOTE_SOCKET     Unix socket of the daemon (default /run/zygote/zygote.sock)
ZYGOTE_URL        base URL of a daemon on TCP, e.g. http://127.0.0.1:8889 or https://host:8443
ZYGOTE_TOKEN      bearer token sent with ZYGOTE_URL
ZYGOTE_CA         PEM CA file an https:// daemon's certificate must chain to (default: system roots)
ZYGOTE_HOME       home: state, images, sandboxes (default /var/lib/zygote)
ZYGOTE_AGENT_BIN  static guest agent installed by `image build`
ZYGOTE_QEMU       qemu-system-x86_64 to use instead of the one on PATH
ZYGOTE_QEMU_IMG   qemu-img to use instead of the one on PATH
ZYGOTE_LOG        log filter, e.g. info or zygote_engine=debug";

const EXAMPLES: &str = "\
Check the host, build the default image, run a command:
    sudo zygote doctor
    sudo zygote image build
    zygote run -- python3 -c 'print(6 * 7)'

Keep a sandbox, use it, remove it:
    id=$(zygote create --memory 512)
    zygote exec \"$id\" -- sh -c 'uname -a'
    zygote cp ./data.csv \"$id\":/root/data.csv
    zygote eval \"$id\" 'len(open(\"/root/data.csv\").read())'
    zygote rm \"$id\"

Warm once, fork many:
    zygote snapshot create --tag np --warmup 'import numpy'
    zygote fork np -n 8 --json | jq -r '.[].sandbox.id'

Shell completions and the manual page:
    zygote completions bash > /etc/bash_completion.d/zygote
    zygote man | man -l -";

const EXIT_STATUS: &str = "\
0      success
1      an error (the message on stderr says what and how to fix it), a
       failed check of `zygote doctor`, a Python error in `eval`
2      bad usage (unknown flag, missing argument)
N      `run` and `exec`: the command's own exit code
128+N  `run` and `exec`: the command was killed by signal N
124    `run` and `exec`: the command hit --timeout and was killed";

/// The sections after DESCRIPTION, for `--help` and the manual.
const SECTIONS: [(&str, &str); 3] = [
    ("ENVIRONMENT", ENVIRONMENT),
    ("EXAMPLES", EXAMPLES),
    ("EXIT STATUS", EXIT_STATUS),
];

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| {
            if l.is_empty() {
                String::new()
            } else {
                format!("    {l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `zygote --help`: the introduction and DESCRIPTION.
pub(crate) fn long_about() -> String {
    format!("{INTRO}\n\nDESCRIPTION\n{}", indent(DESCRIPTION))
}

/// `zygote --help`: ENVIRONMENT, EXAMPLES and EXIT STATUS after the command list.
pub(crate) fn after_long_help() -> String {
    SECTIONS
        .iter()
        .map(|(h, t)| format!("{h}\n{}", indent(t)))
        .collect::<Vec<_>>()
        .join("\n\n")
}

pub(crate) const DAEMON: &str = "\
Run the daemon in the foreground (as root). It serves the REST API on a Unix
socket (and optionally TCP with a bearer token), owns every sandbox and kills
their QEMUs on SIGTERM. A daemon restarted on the same home reports the
sandboxes of the previous one dead and cleans up after them.

Examples:
    sudo zygote daemon
    sudo zygote daemon --listen 127.0.0.1:8889 --token-file /etc/zygote/token";

pub(crate) const IMAGE: &str = "\
Build and list guest images. An image (kernel, initramfs, ext4 root) is built
from Debian packages by a recipe and cached by content under
<home>/images/<name>/<hash>; `current` points at the newest generation.

Examples:
    sudo zygote image build
    sudo zygote image build ./my-recipe.toml
    zygote image ls --json";

pub(crate) const RUN: &str = "\
Create a sandbox, run one command in it with stdout and stderr streamed, and
remove the sandbox. Exits with the command's exit code (128+N for a signal,
124 for --timeout). With --json, nothing streams: one JSON document with
stdout, stderr, exit_code, signal, timed_out and the sandbox id is printed at
the end, and zygote still exits with the command's code.

Examples:
    zygote run -- python3 -c 'import sys; print(sys.version)'
    zygote run --memory 1024 --env N=3 --workdir /tmp -- sh -c 'seq $N'
    zygote run --json -- uname -r | jq -r .stdout";

pub(crate) const CREATE: &str = "\
Create a sandbox (boot the image, wait for its agent) and print its id, or
with --json the whole sandbox record.

Examples:
    id=$(zygote create)
    zygote create --memory 2048 --vcpus 2 --timeout 3600 --json";

pub(crate) const EXEC: &str = "\
Run a command in a sandbox with stdout and stderr streamed; exits with the
command's exit code (128+N for a signal, 124 for --timeout). With --json,
nothing streams: one JSON document with stdout, stderr, exit_code, signal and
timed_out is printed when the command ends.

With -d the command runs in the background: its pid is printed and the call
returns (`zygote ps`, `attach`, `kill`); -i keeps its stdin open.

Examples:
    zygote exec \"$id\" -- ls -l /
    zygote exec \"$id\" --timeout 10 --env PYTHONPATH=/src -- python3 job.py
    zygote exec \"$id\" --json -- sh -c 'echo out; echo err >&2; exit 3'
    zygote exec -d \"$id\" --tag web -- python3 -m http.server 8000";

pub(crate) const PS: &str = "\
List a sandbox's background processes (started with `zygote exec -d`, a
shell, or an SDK's background command): pid, running or how it exited, tag,
whether it has a terminal, and its command line.

Examples:
    zygote ps \"$id\"
    zygote ps \"$id\" --json";

pub(crate) const KILL: &str = "\
Send a signal to a background process's process group: SIGKILL unless -s
names another (15 SIGTERM, 2 SIGINT, 1 SIGHUP).

Examples:
    zygote kill \"$id\" 1234
    zygote kill \"$id\" 1234 -s 15";

pub(crate) const ATTACH: &str = "\
Follow a background process: what it printed so far (the last 256 KiB; not
with --no-replay), then its live output until it exits; exits with its code.
When it takes input (`exec -d -i`, or a terminal), this terminal's stdin is
forwarded. Ctrl-C stops following; the process runs on.

Examples:
    zygote attach \"$id\" 1234
    zygote attach \"$id\" 1234 --no-replay";

pub(crate) const SHELL: &str = "\
An interactive login shell in the sandbox on this terminal (raw mode; the
guest's terminal follows this one's size). The shell is a background process
with a terminal: leaving this program by closing the terminal leaves it
running (`zygote ps`, `zygote attach`).

Examples:
    zygote shell \"$id\"
    zygote shell \"$id\" --user app --shell /bin/sh";

pub(crate) const PAUSE: &str = "\
Pause a running sandbox: it is stored as a snapshot of itself (memory, device
state, disk, written to disk), its VM stops and its memory is freed. It stays
listed as paused under its id, survives a daemon restart, and `zygote resume`
brings it back with its processes, interpreter state and files.

Examples:
    zygote pause \"$id\"
    zygote resume \"$id\"";

pub(crate) const RESUME: &str = "\
Resume a paused sandbox under the same id, as it was when paused.

Examples:
    zygote resume \"$id\"
    zygote resume \"$id\" --json";

pub(crate) const TIMEOUT: &str = "\
Give a sandbox a new lifetime of SECS from now (replacing the old one). When
it runs out the sandbox is removed, or paused with --on-expiry pause.

Examples:
    zygote timeout \"$id\" 600
    zygote timeout \"$id\" 3600 --on-expiry pause";

pub(crate) const EVAL: &str = "\
Evaluate Python in the sandbox's warm interpreter (state persists between
calls). Prints captured stdout, then the value of a final expression; a
Python error prints its traceback on stderr and exits 1.

Examples:
    zygote eval \"$id\" 'x = 6'
    zygote eval \"$id\" 'x * 7'
    zygote eval \"$id\" --json 'import os; os.getpid()'";

pub(crate) const CP: &str = "\
Copy one file into or out of a sandbox. Exactly one side is ID:/absolute/path.
Files over 1 MiB go through a per-sandbox transfer disk.

Examples:
    zygote cp ./model.bin \"$id\":/root/model.bin
    zygote cp \"$id\":/root/out.json ./out.json --json";

pub(crate) const LS: &str = "\
List sandboxes: id, image, state, memory, vCPUs, boot time, and why a dead one
died.

Examples:
    zygote ls
    zygote ls --json | jq -r '.[] | select(.state == \"running\") | .id'";

pub(crate) const RM: &str = "\
Remove sandboxes: stop their QEMU and delete their overlay, sockets and
runtime directory. Prints each id removed; exits 1 if any removal failed.

Examples:
    zygote rm \"$id\"
    zygote rm --all --json";

pub(crate) const SNAPSHOT: &str = "\
Snapshots: guest RAM, device state and a frozen disk, from which children
start copy-on-write. `create` boots an image, runs an optional warm-up in the
Python interpreter and snapshots it; the snapshot is usable at once and
written to disk (memory.bin) in the background (status writing -> ready).

Examples:
    zygote snapshot create --tag np --warmup 'import numpy' --wait
    zygote snapshot ls
    zygote snapshot inspect np --json
    zygote snapshot rm np";

pub(crate) const VOLUME: &str = "\
Named volumes: ext4 disks the daemon owns that outlive sandboxes and are never
part of a snapshot. Attach one with --volume NAME:/guest/path (writable: one
sandbox at a time) or NAME:/guest/path:ro (any number at once, each through a
copy-on-write view of its own) on create, run and spawn. A host directory under
the daemon's --volume-host-root attaches read-only as a copy taken at attach:
--volume /host/dir:/guest/path:ro. Every VM has 4 volume slots.

Examples:
    zygote volume create data --size 10G
    id=$(zygote create --volume data:/data)
    zygote spawn warm -n 8 --volume data:/data:ro
    zygote volume ls
    zygote volume rm data";

pub(crate) const BRANCH: &str = "\
Branch a running sandbox into a snapshot; the sandbox keeps running. `copy`
pauses the guest for the copy of its touched memory; `live` migrates while
the guest runs and pauses only for the switch-over. --wait shows progress until
the snapshot is on disk.

Examples:
    zygote branch \"$id\" --tag step1
    zygote branch \"$id\" --mode live --downtime-ms 20 --json";

pub(crate) const SPAWN: &str = "\
Start children of a snapshot (`POST /v1/snapshots/TAG/spawn`). Children share
the snapshot's memory copy-on-write unless --private-memory; copy-on-write
children come first from the snapshot's pre-started pool. Prints one line per
child; exits 1 if any failed. `zygote fork` does the same for a tag and
branches first when given a sandbox id.

Examples:
    zygote spawn np -n 4
    zygote spawn np --private-memory --hugepages --json";

pub(crate) const FORK: &str = "\
Start children from a snapshot tag, or from a running sandbox (branched first
into a new snapshot). Children share the snapshot's memory copy-on-write
unless --private-memory. Prints one line per child; exits 1 if any failed.

Examples:
    zygote fork np -n 4
    zygote fork \"$id\" -n 2 --json
    zygote fork np --private-memory --hugepages";

pub(crate) const DOCTOR: &str = "\
Check this host and the daemon against what zygote needs: platform, hardware
virtualisation (a paravirtual kvm_pvm does not count), the accelerator that
will be used, QEMU and qemu-img, the guest kernel and image, free space in the
home, the hugepage pool, memfd and hugetlb memfds, /proc/<pid>/pagemap and
process_vm_readv, userfaultfd, cgroups, /dev/net/tun, network namespaces, KSM,
the daemon and its token. Each check is pass, warn (zygote works without it,
maybe slower), fail (zygote will not work) or skip, with a hint saying what to
do. Exits 1 when any check fails. Never changes the host and never starts a
daemon: with nothing on the default socket the daemon check warns (commands
start one there as root); with --socket or --url it fails. The token check
runs on TCP only: it fails when the daemon refuses ZYGOTE_TOKEN.

Hugepages: `no pool` and `pool exhausted` warn (--hugepages then falls back to
4 KiB pages; reserve a pool with `echo 512 | sudo tee /proc/sys/vm/nr_hugepages`);
a pool with free pages passes with free/total.

Examples:
    sudo zygote doctor
    zygote doctor --json | jq '.checks[] | select(.status != \"pass\")'
    ZYGOTE_URL=http://10.0.0.2:8889 ZYGOTE_TOKEN=... zygote doctor";

pub(crate) const COMPLETIONS: &str = "\
Print a completion script for a shell on stdout.

Examples:
    zygote completions bash | sudo tee /etc/bash_completion.d/zygote
    zygote completions zsh > \"${fpath[1]}/_zygote\"
    zygote completions fish > ~/.config/fish/completions/zygote.fish";

pub(crate) const MAN: &str = "\
Print the manual page (roff) of zygote on stdout.

Examples:
    zygote man | man -l -
    zygote man | sudo tee /usr/local/share/man/man1/zygote.1";

#[derive(Args, Debug)]
pub(crate) struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    shell: Shell,
}

pub(crate) fn completions(a: CompletionsArgs) -> Result<u8> {
    let mut cmd = crate::Cli::command();
    clap_complete::generate(a.shell, &mut cmd, "zygote", &mut std::io::stdout());
    Ok(0)
}

/// Escapes text for a roff no-fill block.
fn roff_text(t: &str) -> String {
    t.lines()
        .map(|l| {
            let l = l.replace('\\', "\\e").replace('-', "\\-");
            if l.starts_with('.') || l.starts_with('\'') {
                format!("\\&{l}")
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The manual page: clap_mangen's NAME, SYNOPSIS, DESCRIPTION, OPTIONS and
/// SUBCOMMANDS, then ENVIRONMENT, EXAMPLES and EXIT STATUS, then VERSION.
pub(crate) fn render_man() -> Result<Vec<u8>> {
    let cmd = crate::Cli::command()
        .long_about(format!("{INTRO}\n\n{DESCRIPTION}"))
        .after_long_help(None::<&str>);
    let man = clap_mangen::Man::new(cmd);
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    man.render_subcommands_section(&mut out)?;
    for (h, t) in SECTIONS {
        out.extend_from_slice(format!(".SH \"{h}\"\n.nf\n{}\n.fi\n", roff_text(t)).as_bytes());
    }
    man.render_version_section(&mut out)?;
    Ok(out)
}

pub(crate) fn man() -> Result<u8> {
    use std::io::Write;
    std::io::stdout().write_all(&render_man()?)?;
    Ok(0)
}

pub(crate) const NETWORK: &str = "\
Replace a running sandbox's egress policy; new connections follow it at once.

  zygote network ID --no-internet --allow-out 198.18.0.2/32
  zygote network ID --deny-out 10.0.0.0/8
  zygote network ID                      (internet on, no lists)

--deny-out wins over --allow-out; --no-internet with --allow-out lets only
those CIDRs through. A refused connection is refused at once (a TCP reset).
Create-time flags are the same (`zygote create --no-internet ...`), plus
--no-network for a sandbox without a network card.";

pub(crate) const PORT: &str = "\
Expose a guest TCP port on the daemon's host and print the address that
reaches it (a relay in the daemon connects inside the sandbox's namespace).

  zygote exec -d ID -- python3 -m http.server 8000
  curl http://$(zygote port ID 8000)/
  zygote port ID 8000 --rm               (stop exposing it)

Ports go away with the sandbox, and when it pauses.";

#[cfg(test)]
mod tests {
    #[test]
    fn the_cli_definition_is_consistent() {
        use clap::CommandFactory;
        crate::Cli::command().debug_assert();
    }

    #[test]
    fn the_manual_has_every_section() {
        let man = String::from_utf8(super::render_man().unwrap()).unwrap();
        for s in ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "SUBCOMMANDS"] {
            assert!(man.contains(&format!(".SH {s}")), "{s}");
        }
        for s in ["ENVIRONMENT", "EXAMPLES", "EXIT STATUS"] {
            assert!(man.contains(&format!(".SH \"{s}\"")), "{s}");
        }
        assert!(man.contains("ZYGOTE_SOCKET"));
    }

    #[test]
    fn help_documents_every_environment_variable() {
        use crate::env;
        let help = super::after_long_help();
        for v in [
            env::SOCKET,
            env::URL,
            env::TOKEN,
            env::HOME,
            env::AGENT_BIN,
            env::LOG,
            env::QEMU,
            env::QEMU_IMG,
        ] {
            assert!(help.contains(v), "{v} is not in ENVIRONMENT");
        }
    }
}
