//! Constants of the QEMU 10.0 migration stream, each with the QEMU source that
//! defines or writes it. Pure data: no parsing lives here.
//!
//! Sources (QEMU 10.0): `migration/savevm.c` (`QEMU_VM_*`, `enum qemu_vm_cmd`,
//! `save_section_header`, `save_section_footer`, `qemu_savevm_command_send`,
//! `vmstate_configuration` and its subsections), `migration/ram.h`
//! (`RAM_SAVE_FLAG_*`, moved there from `ram.c` in 9.1), `migration/ram.c`
//! (`ram_save_setup`, `save_page_header`, `save_zero_page`, `ram_load_precopy`),
//! `migration/vmstate.c` (`vmstate_subsection_save`).

/// `QEMU_VM_FILE_MAGIC`: "QEVM".
pub const MAGIC: u32 = 0x5145_564d;
/// `QEMU_VM_FILE_VERSION`.
pub const VERSION: u32 = 3;

/// `QEMU_VM_EOF`: ends the device state (then the optional VMDESCRIPTION).
pub const SEC_EOF: u8 = 0x00;
/// `QEMU_VM_SECTION_START`: be32 id, u8 len + idstr, be32 instance, be32 version.
pub const SEC_START: u8 = 0x01;
/// `QEMU_VM_SECTION_PART`: be32 id.
pub const SEC_PART: u8 = 0x02;
/// `QEMU_VM_SECTION_END`: be32 id.
pub const SEC_END: u8 = 0x03;
/// `QEMU_VM_SECTION_FULL`: header as START; a device's whole vmstate.
pub const SEC_FULL: u8 = 0x04;
/// `QEMU_VM_SUBSECTION`: u8 len + name, be32 version, fields.
pub const SEC_SUBSECTION: u8 = 0x05;
/// `QEMU_VM_VMDESCRIPTION`: be32 len + JSON, after `QEMU_VM_EOF`.
pub const SEC_VMDESCRIPTION: u8 = 0x06;
/// `QEMU_VM_CONFIGURATION`: `vmstate_configuration` (be32 len + machine name,
/// then subsections).
pub const SEC_CONFIGURATION: u8 = 0x07;
/// `QEMU_VM_COMMAND`: be16 command, be16 len, data.
pub const SEC_COMMAND: u8 = 0x08;
/// `QEMU_VM_SECTION_FOOTER`: be32 section id, after every START/PART/END/FULL
/// (sent because `send-section-footer` defaults on).
pub const SEC_FOOTER: u8 = 0x7e;

/// `RAM_SAVE_FLAG_FULL`: obsolete since 2009; rejected by the loader.
pub const F_FULL: u64 = 0x01;
/// `RAM_SAVE_FLAG_ZERO`: a zero page; one fill byte follows, which must be 0
/// since QEMU 8.2 ("Found a zero page with value %d").
pub const F_ZERO: u64 = 0x02;
/// `RAM_SAVE_FLAG_MEM_SIZE`: the block list (setup only).
pub const F_MEM_SIZE: u64 = 0x04;
/// `RAM_SAVE_FLAG_PAGE`: a whole target page follows.
pub const F_PAGE: u64 = 0x08;
/// `RAM_SAVE_FLAG_EOS`: ends a RAM section's records.
pub const F_EOS: u64 = 0x10;
/// `RAM_SAVE_FLAG_CONTINUE`: same block as the previous page record (across
/// section boundaries too: the loader keeps `last_recv_block`).
pub const F_CONTINUE: u64 = 0x20;
/// `RAM_SAVE_FLAG_XBZRLE`.
pub const F_XBZRLE: u64 = 0x40;
/// `RAM_SAVE_FLAG_HOOK` (RDMA only).
pub const F_HOOK: u64 = 0x80;
/// `RAM_SAVE_FLAG_COMPRESS_PAGE`: removed in QEMU 9.1.
pub const F_COMPRESS_PAGE: u64 = 0x100;
/// `RAM_SAVE_FLAG_MULTIFD_FLUSH`: new since 8.1, only sent with multifd
/// (`multifd_ram_flush_and_sync` returns early without it).
pub const F_MULTIFD_FLUSH: u64 = 0x200;

/// The x86 target page size (`TARGET_PAGE_BITS` 12). Flags live in the low bits
/// of a record's be64 (`addr & ~TARGET_PAGE_MASK` in `ram_load_precopy`).
pub const PAGE_SIZE: u64 = 4096;
/// `TARGET_PAGE_BITS` on x86.
pub const PAGE_BITS: u32 = 12;

/// The RAM iterable's idstr and version (`register_savevm_live("ram", 0, 4, ..)`).
pub const RAM_IDSTR: &[u8] = b"ram";
/// `ram_load` refuses any other version.
pub const RAM_VERSION: u32 = 4;

/// `enum qemu_vm_cmd` in savevm.c. Only [`CMD_SWITCHOVER_START`] appears in a
/// plain precopy stream (QEMU 10.0 sends it before the RAM END section unless
/// the `send-switchover-start` migration property is off).
pub const CMD_OPEN_RETURN_PATH: u16 = 1;
/// `MIG_CMD_PING`.
pub const CMD_PING: u16 = 2;
/// `MIG_CMD_POSTCOPY_ADVISE`.
pub const CMD_POSTCOPY_ADVISE: u16 = 3;
/// `MIG_CMD_PACKAGED`.
pub const CMD_PACKAGED: u16 = 7;
/// `MIG_CMD_ENABLE_COLO`.
pub const CMD_ENABLE_COLO: u16 = 8;
/// `MIG_CMD_SWITCHOVER_START` (new in 10.0, data length 0).
pub const CMD_SWITCHOVER_START: u16 = 11;

/// Subsections of `vmstate_configuration`, in the order QEMU writes them.
pub const SUB_TARGET_PAGE_BITS: &[u8] = b"configuration/target-page-bits";
/// `vmstate_capabilites`: be32 count, then u8 len + name per capability. Only
/// "validatable" capabilities are listed (`should_validate_capability`:
/// x-ignore-shared and mapped-ram in 10.0), and the destination refuses a
/// mismatch with its own settings.
pub const SUB_CAPABILITIES: &[u8] = b"configuration/capabilities";
/// `vmstate_uuid` (only with `validate-uuid`): 16 bytes.
pub const SUB_UUID: &[u8] = b"configuration/uuid";
/// The capability the RAM-less vmstate must name.
pub const CAP_X_IGNORE_SHARED: &[u8] = b"x-ignore-shared";
/// A capability whose stream has a different RAM layout (file migration only).
pub const CAP_MAPPED_RAM: &[u8] = b"mapped-ram";

/// Name of a `MIG_CMD_*` for error messages.
pub fn command_name(cmd: u16) -> &'static str {
    match cmd {
        0 => "INVALID",
        CMD_OPEN_RETURN_PATH => "OPEN_RETURN_PATH",
        CMD_PING => "PING",
        CMD_POSTCOPY_ADVISE => "POSTCOPY_ADVISE",
        4 => "POSTCOPY_LISTEN",
        5 => "POSTCOPY_RUN",
        6 => "POSTCOPY_RAM_DISCARD",
        CMD_PACKAGED => "PACKAGED",
        CMD_ENABLE_COLO => "ENABLE_COLO",
        9 => "POSTCOPY_RESUME",
        10 => "RECV_BITMAP",
        CMD_SWITCHOVER_START => "SWITCHOVER_START",
        _ => "unknown",
    }
}
