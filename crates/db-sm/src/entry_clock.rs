//! The clock and the time zone SQLite sees while the state machine applies
//! a write: the primary's clock recorded in the entry, and no time zone.
//!
//! Every way SQL has of asking for "now" (`datetime('now')`, `'now'` bound
//! as a parameter or computed, `date()` with no argument, `strftime(fmt)`,
//! `CURRENT_TIMESTAMP`, `CURRENT_DATE`, `CURRENT_TIME`, a column's
//! `DEFAULT CURRENT_TIMESTAMP`, ...) ends in one place in SQLite:
//! `sqlite3StmtCurrentTime`, which asks the connection's VFS
//! (`xCurrentTimeInt64`) once per statement step. So the state machine's
//! connection is opened on [`VFS_NAME`], a copy of the default (unix) VFS
//! whose clock answers the time of the entry being applied ([`EntryTime`],
//! set by the applier around each write); files, locks and everything else
//! are the default VFS's own functions. Every node then reads the same
//! "now" for the same entry, whatever its own clock says, and a `DEFAULT`
//! is evaluated at each insert with that insert's entry time. Outside an
//! [`EntryTime`] (Bulwark's own statements) and on every other connection
//! (reads) the clock is the machine's.
//!
//! Local time (`'localtime'`, `'utc'` modifiers) depends on each node's
//! time zone. SQLite converts through one process-wide hook
//! (`SQLITE_TESTCTRL_LOCALTIME_FAULT`, installed by [`install`]): inside an
//! API write it fails, so SQLite answers the statement "local time
//! unavailable" on every node alike; everywhere else it is the C library's
//! `localtime_r`, as without the hook.
//!
//! Owns: the VFS and the local-time hook. Must not touch: which statements
//! may run (`sql::guard`), applying entries (the state machine).
use rusqlite::ffi;
use std::cell::Cell;
use std::ffi::{c_double, c_int, c_void, CStr};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::OnceLock;

/// Name of the VFS whose clock is the entry's time.
pub const VFS_NAME: &str = "bulwark-entry-clock";
const VFS_NAME_C: &CStr = c"bulwark-entry-clock";

/// The Unix epoch as a Julian day number, in milliseconds (SQLite's
/// `xCurrentTimeInt64` unit).
const UNIX_EPOCH_JULIAN_MS: i64 = 24_405_875 * 8_640_000;

thread_local! {
    // SQLite asks for the time on the thread that steps the statement: the
    // one that set this.
    static ENTRY_TIME_MS: Cell<Option<u64>> = const { Cell::new(None) };
}

/// While alive, statements stepped on this thread through [`VFS_NAME`]
/// read `time_ms` (Unix ms) as "now".
pub struct EntryTime(Option<u64>);

impl EntryTime {
    pub fn set(time_ms: u64) -> EntryTime {
        EntryTime(ENTRY_TIME_MS.replace(Some(time_ms)))
    }
}

impl Drop for EntryTime {
    fn drop(&mut self) {
        ENTRY_TIME_MS.set(self.0);
    }
}

/// The default VFS this one copies (its clock answers outside an entry).
static BASE: AtomicPtr<ffi::sqlite3_vfs> = AtomicPtr::new(std::ptr::null_mut());

unsafe extern "C" fn current_time_int64(_vfs: *mut ffi::sqlite3_vfs, out: *mut ffi::sqlite3_int64) -> c_int {
    if let Some(ms) = ENTRY_TIME_MS.get() {
        // SAFETY: SQLite passes a valid pointer to write the time to.
        unsafe { *out = UNIX_EPOCH_JULIAN_MS + ms.min(i64::MAX as u64 / 2) as i64 };
        return ffi::SQLITE_OK;
    }
    let base = BASE.load(Ordering::Acquire);
    // SAFETY: `base` is the registered default VFS (set before this VFS was
    // registered, never freed); its clock takes any VFS pointer.
    unsafe {
        match ((*base).iVersion >= 2).then_some((*base).xCurrentTimeInt64).flatten() {
            Some(f) => f(base, out),
            None => match (*base).xCurrentTime {
                Some(f) => {
                    let mut days: c_double = 0.0;
                    let rc = f(base, &mut days);
                    *out = (days * 86_400_000.0) as i64;
                    rc
                }
                None => ffi::SQLITE_ERROR,
            },
        }
    }
}

unsafe extern "C" fn current_time(vfs: *mut ffi::sqlite3_vfs, out: *mut c_double) -> c_int {
    let mut ms: ffi::sqlite3_int64 = 0;
    // SAFETY: forwarded from SQLite's own call.
    let rc = unsafe { current_time_int64(vfs, &mut ms) };
    // SAFETY: SQLite passes a valid pointer to write the time to.
    unsafe { *out = ms as c_double / 86_400_000.0 };
    rc
}

/// `localtime_r`, except inside an API write (see the module doc).
unsafe extern "C" fn localtime_outside_writes(t: *const c_void, tm: *mut c_void) -> c_int {
    if crate::sql::in_api_write() {
        return 1;
    }
    // SAFETY: SQLite passes a `time_t*` and a `struct tm*` (see
    // SQLITE_TESTCTRL_LOCALTIME_FAULT in sqlite3.c).
    let converted = unsafe { libc::localtime_r(t as *const libc::time_t, tm as *mut libc::tm) };
    c_int::from(converted.is_null())
}

/// Why SQLite could not be set up with the entry clock: a fault of this
/// process's SQLite, the same on every try.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClockError {
    #[error("initializing SQLite: {0}")]
    Initialize(#[source] ffi::Error),
    #[error("SQLite has no default VFS")]
    NoDefaultVfs,
    #[error("registering the {VFS_NAME} VFS: {0}")]
    Register(#[source] ffi::Error),
}

/// Register [`VFS_NAME`] and the local-time hook, once per process.
pub fn install() -> Result<(), ClockError> {
    static DONE: OnceLock<Result<(), ClockError>> = OnceLock::new();
    DONE.get_or_init(|| {
        // SAFETY: sqlite3_initialize is safe to call at any time; the VFS
        // registry is guarded by SQLite's own mutex. The new VFS is leaked:
        // SQLite keeps a pointer to it for the life of the process.
        unsafe {
            let rc = ffi::sqlite3_initialize();
            if rc != ffi::SQLITE_OK {
                return Err(ClockError::Initialize(ffi::Error::new(rc)));
            }
            let base = ffi::sqlite3_vfs_find(std::ptr::null());
            if base.is_null() {
                return Err(ClockError::NoDefaultVfs);
            }
            BASE.store(base, Ordering::Release);
            let mut vfs: ffi::sqlite3_vfs = *base;
            vfs.pNext = std::ptr::null_mut();
            vfs.zName = VFS_NAME_C.as_ptr();
            vfs.xCurrentTime = Some(current_time);
            if vfs.iVersion >= 2 {
                vfs.xCurrentTimeInt64 = Some(current_time_int64);
            }
            let rc = ffi::sqlite3_vfs_register(Box::into_raw(Box::new(vfs)), 0);
            if rc != ffi::SQLITE_OK {
                return Err(ClockError::Register(ffi::Error::new(rc)));
            }
            type Localtime = unsafe extern "C" fn(*const c_void, *mut c_void) -> c_int;
            ffi::sqlite3_test_control(
                ffi::SQLITE_TESTCTRL_LOCALTIME_FAULT,
                2 as c_int,
                localtime_outside_writes as Localtime,
            );
        }
        Ok(())
    })
    .clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::{Connection, OpenFlags};

    fn open(vfs: &str) -> Connection {
        install().unwrap();
        Connection::open_with_flags_and_vfs(":memory:", OpenFlags::default(), vfs).unwrap()
    }

    fn now(c: &Connection, sql: &str) -> String {
        c.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn the_entry_time_is_now_only_on_this_vfs_and_only_while_set() {
        let c = open(VFS_NAME);
        let plain = open("unix");
        let real = now(&plain, "SELECT datetime('now')");
        {
            let _at = EntryTime::set(1_700_000_000_123);
            assert_eq!(now(&c, "SELECT strftime('%Y-%m-%d %H:%M:%f')"), "2023-11-14 22:13:20.123");
            assert_eq!(now(&c, "SELECT CURRENT_TIMESTAMP"), "2023-11-14 22:13:20");
            // Reads on other connections keep the machine's clock.
            assert_ne!(now(&plain, "SELECT datetime('now')"), "2023-11-14 22:13:20");
            {
                let _later = EntryTime::set(0);
                assert_eq!(now(&c, "SELECT datetime('now')"), "1970-01-01 00:00:00");
            }
            assert_eq!(now(&c, "SELECT datetime('now')"), "2023-11-14 22:13:20");
        }
        // Unset again: the machine's clock.
        let after: String = c.query_row("SELECT datetime('now')", [], |r| r.get(0)).unwrap();
        let apart: f64 =
            plain.query_row("SELECT abs(unixepoch(?1) - unixepoch(?2))", [&real, &after], |r| r.get(0)).unwrap();
        assert!(apart < 3600.0, "the machine's clock said {real}, the VFS's {after}");
    }
}
