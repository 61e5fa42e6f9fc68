/* LD_PRELOAD fault injector for the I/O-error tests (tests/durability/test_io_errors.py).
 *
 * While the file named by FAULT_TRIGGER exists, write/pwrite/pwrite64/writev (FAULT_OP=write) or
 * fsync/fdatasync (FAULT_OP=fsync) on a descriptor whose path contains FAULT_PATH fail with errno
 * FAULT_ERRNO (e.g. 28 ENOSPC, 5 EIO). Everything else goes to libc untouched. Build:
 *     cc -shared -fPIC -O2 -o faultfs.so faultfs.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

static int faulty(int fd, const char *op) {
    const char *want = getenv("FAULT_OP");
    const char *trigger = getenv("FAULT_TRIGGER");
    const char *where = getenv("FAULT_PATH");
    if (!want || !trigger || !where || strcmp(want, op) != 0) return 0;
    if (access(trigger, F_OK) != 0) return 0;
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0) return 0;
    path[n] = 0;
    if (!strstr(path, where)) return 0;
    const char *e = getenv("FAULT_ERRNO");
    errno = e ? atoi(e) : EIO;
    return 1;
}

#define REAL(name, ret, ...) \
    static ret (*real_##name)(__VA_ARGS__); \
    if (!real_##name) real_##name = (ret (*)(__VA_ARGS__))dlsym(RTLD_NEXT, #name)

ssize_t write(int fd, const void *buf, size_t n) {
    REAL(write, ssize_t, int, const void *, size_t);
    if (faulty(fd, "write")) return -1;
    return real_write(fd, buf, n);
}
ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
    REAL(pwrite, ssize_t, int, const void *, size_t, off_t);
    if (faulty(fd, "write")) return -1;
    return real_pwrite(fd, buf, n, off);
}
ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off) {
    REAL(pwrite64, ssize_t, int, const void *, size_t, off_t);
    if (faulty(fd, "write")) return -1;
    return real_pwrite64(fd, buf, n, off);
}
ssize_t writev(int fd, const struct iovec *iov, int cnt) {
    REAL(writev, ssize_t, int, const struct iovec *, int);
    if (faulty(fd, "write")) return -1;
    return real_writev(fd, iov, cnt);
}
int fsync(int fd) {
    REAL(fsync, int, int);
    if (faulty(fd, "fsync")) return -1;
    return real_fsync(fd);
}
int fdatasync(int fd) {
    REAL(fdatasync, int, int);
    if (faulty(fd, "fsync")) return -1;
    return real_fdatasync(fd);
}
