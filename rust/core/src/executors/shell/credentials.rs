//! `su`: the user (and group) a job runs as, looked up in the host's user database with the
//! reentrant libc calls, since the engine may look up users on several threads at once.

use std::ffi::CString;

/// The uid and gid for `su` (`user` or `user:group`, names or numeric ids); `(None, None)` when
/// unset. A numeric user must exist (its group comes from it); a numeric group is taken as is.
pub fn resolve(su: Option<&(String, Option<String>)>) -> Result<(Option<u32>, Option<u32>), String> {
    let Some((user, group)) = su else { return Ok((None, None)) };
    let (uid, user_gid) = match numeric(user) {
        Some(id) => user_by_id(id),
        None => user_by_name(user),
    }
    .ok_or_else(|| format!("shell: su: no such user {user:?}"))?;
    let gid = match group {
        None => user_gid,
        Some(group) => match numeric(group) {
            Some(id) => id,
            None => group_by_name(group).ok_or_else(|| format!("shell: su: no such group {group:?}"))?,
        },
    };
    // SAFETY: geteuid and getegid cannot fail.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if euid != 0 && (uid != euid || gid != egid) {
        return Err(format!("shell: su {user:?} needs the host to run as root"));
    }
    Ok((Some(uid), Some(gid)))
}

fn numeric(text: &str) -> Option<u32> {
    text.bytes().all(|b| b.is_ascii_digit()).then(|| text.parse().ok()).flatten()
}

/// Calls a `get*_r` function with a buffer that grows while the answer does not fit.
fn with_buffer<T>(mut call: impl FnMut(&mut [u8]) -> Result<Option<T>, libc::c_int>) -> Option<T> {
    let mut buf = vec![0u8; 1024];
    loop {
        match call(&mut buf) {
            Err(libc::ERANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            Err(libc::EINTR) => {}
            Ok(found) => return found,
            Err(_) => return None,
        }
    }
}

fn user_by_name(name: &str) -> Option<(u32, u32)> {
    let name = CString::new(name).ok()?;
    user_lookup(|pwd, buf, result| {
        // SAFETY: every pointer is valid for the call; buf outlives the use of pwd's strings.
        unsafe { libc::getpwnam_r(name.as_ptr(), pwd, buf.as_mut_ptr().cast(), buf.len(), result) }
    })
}

fn user_by_id(uid: u32) -> Option<(u32, u32)> {
    user_lookup(|pwd, buf, result| {
        // SAFETY: as in user_by_name.
        unsafe { libc::getpwuid_r(uid, pwd, buf.as_mut_ptr().cast(), buf.len(), result) }
    })
}

fn user_lookup(
    mut call: impl FnMut(*mut libc::passwd, &mut [u8], *mut *mut libc::passwd) -> libc::c_int,
) -> Option<(u32, u32)> {
    with_buffer(|buf| {
        // SAFETY: passwd is plain data; an all-zero value is a valid out-parameter.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        match call(&mut pwd, buf, &mut result) {
            0 if result.is_null() => Ok(None),
            0 => Ok(Some((pwd.pw_uid, pwd.pw_gid))),
            errno => Err(errno),
        }
    })
}

fn group_by_name(name: &str) -> Option<u32> {
    let name = CString::new(name).ok()?;
    with_buffer(|buf| {
        // SAFETY: group is plain data; an all-zero value is a valid out-parameter.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::group = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call.
        let rc = unsafe { libc::getgrnam_r(name.as_ptr(), &mut grp, buf.as_mut_ptr().cast(), buf.len(), &mut result) };
        match rc {
            0 if result.is_null() => Ok(None),
            0 => Ok(Some(grp.gr_gid)),
            errno => Err(errno),
        }
    })
}
