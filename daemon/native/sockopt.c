/*
 * The socket calls Node does not expose, and nothing more:
 *   originalDst(fd, family)  getsockopt SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST on a
 *                            REDIRECTed accepted socket -> [address, port]
 *   markedSocket(family, mark) a fresh non-blocking TCP socket with SO_MARK set, for
 *                            net.Socket({ fd }) so the daemon's own connections carry
 *                            qmesh's mark before their SYN leaves (iptables exempts it).
 *   sendSegments(fd, buf, offset, length, segment, host, port)
 *                            one sendmsg of `length` bytes cut by the kernel into datagrams
 *                            of `segment` bytes (UDP GSO): one syscall and one pass through
 *                            the stack for up to 64 QUIC packets. Returns bytes sent, or
 *                            -errno (the caller falls back to dgram's send).
 *   sdNotify(path, message)  one datagram to systemd's NOTIFY_SOCKET (sd_notify(3)): an
 *                            AF_UNIX datagram socket, which Node cannot open. A path
 *                            starting with '@' is in the abstract namespace.
 *   setAbortiveClose(fd, on) SO_LINGER {on, 0}: see set_abortive_close.
 * Errors are thrown as Error objects whose `code` is the errno name.
 */
#include <node_api.h>
#include <errno.h>
#include <string.h>
#include <stdio.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <netinet/udp.h>
#include <stddef.h>
#include <sys/un.h>
#include <linux/netfilter_ipv4.h>

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif

#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80
#endif

static napi_value throw_errno(napi_env env, const char *syscall, int err) {
  char msg[160];
  snprintf(msg, sizeof msg, "%s failed: %s", syscall, strerror(err));
  const char *code = err == ENOENT ? "ENOENT" : err == EPERM ? "EPERM" : err == EBADF ? "EBADF"
                   : err == ENOTSOCK ? "ENOTSOCK" : err == EINVAL ? "EINVAL" : err == ENOPROTOOPT ? "ENOPROTOOPT"
                   : err == EAFNOSUPPORT ? "EAFNOSUPPORT" : err == EMFILE ? "EMFILE" : err == ECONNREFUSED ? "ECONNREFUSED"
                   : err == EACCES ? "EACCES" : err == ENAMETOOLONG ? "ENAMETOOLONG" : err == EAGAIN ? "EAGAIN" : "EIO";
  napi_throw_error(env, code, msg);
  return NULL;
}

static int get_int_args(napi_env env, napi_callback_info info, int32_t *a, int32_t *b) {
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2) return -1;
  if (napi_get_value_int32(env, argv[0], a) != napi_ok) return -1;
  if (napi_get_value_int32(env, argv[1], b) != napi_ok) return -1;
  return 0;
}

static napi_value original_dst(napi_env env, napi_callback_info info) {
  int32_t fd, family;
  if (get_int_args(env, info, &fd, &family) != 0) {
    napi_throw_type_error(env, "EINVAL", "originalDst(fd: number, family: 4 | 6)");
    return NULL;
  }
  char text[INET6_ADDRSTRLEN];
  uint16_t port;
  if (family == 6) {
    struct sockaddr_in6 sa;
    socklen_t len = sizeof sa;
    memset(&sa, 0, sizeof sa);
    if (getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &sa, &len) != 0) return throw_errno(env, "getsockopt(IP6T_SO_ORIGINAL_DST)", errno);
    inet_ntop(AF_INET6, &sa.sin6_addr, text, sizeof text);
    port = ntohs(sa.sin6_port);
  } else {
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    memset(&sa, 0, sizeof sa);
    if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &sa, &len) != 0) return throw_errno(env, "getsockopt(SO_ORIGINAL_DST)", errno);
    inet_ntop(AF_INET, &sa.sin_addr, text, sizeof text);
    port = ntohs(sa.sin_port);
  }
  napi_value result, address, port_value;
  napi_create_array_with_length(env, 2, &result);
  napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &address);
  napi_create_uint32(env, port, &port_value);
  napi_set_element(env, result, 0, address);
  napi_set_element(env, result, 1, port_value);
  return result;
}

static napi_value marked_socket(napi_env env, napi_callback_info info) {
  int32_t family, mark;
  if (get_int_args(env, info, &family, &mark) != 0) {
    napi_throw_type_error(env, "EINVAL", "markedSocket(family: 4 | 6, mark: number)");
    return NULL;
  }
  int fd = socket(family == 6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, "socket", errno);
  uint32_t value = (uint32_t)mark;
  if (setsockopt(fd, SOL_SOCKET, SO_MARK, &value, sizeof value) != 0) {
    int err = errno;
    close(fd);
    return throw_errno(env, "setsockopt(SO_MARK)", err);
  }
  napi_value out;
  napi_create_int32(env, fd, &out);
  return out;
}

static napi_value closefd(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok) {
    napi_throw_type_error(env, "EINVAL", "closeFd(fd: number)");
    return NULL;
  }
  close(fd);
  return NULL;
}

static napi_value send_segments(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 7) {
    napi_throw_type_error(env, "EINVAL", "sendSegments(fd, buf, offset, length, segment, host | null, port)");
    return NULL;
  }
  int32_t fd, offset, length, segment, port;
  void *data;
  size_t buflen;
  if (napi_get_value_int32(env, argv[0], &fd) != napi_ok || napi_get_buffer_info(env, argv[1], &data, &buflen) != napi_ok ||
      napi_get_value_int32(env, argv[2], &offset) != napi_ok || napi_get_value_int32(env, argv[3], &length) != napi_ok ||
      napi_get_value_int32(env, argv[4], &segment) != napi_ok || napi_get_value_int32(env, argv[6], &port) != napi_ok ||
      offset < 0 || length <= 0 || segment <= 0 || (size_t)offset + (size_t)length > buflen) {
    napi_throw_type_error(env, "EINVAL", "sendSegments: bad arguments");
    return NULL;
  }
  struct sockaddr_storage ss;
  socklen_t sslen = 0;
  napi_valuetype host_type;
  napi_typeof(env, argv[5], &host_type);
  if (host_type == napi_string) {
    char host[INET6_ADDRSTRLEN + 1];
    size_t hl;
    napi_get_value_string_utf8(env, argv[5], host, sizeof host, &hl);
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
      s4->sin_family = AF_INET;
      s4->sin_port = htons((uint16_t)port);
      sslen = sizeof *s4;
    } else if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
      s6->sin6_family = AF_INET6;
      s6->sin6_port = htons((uint16_t)port);
      sslen = sizeof *s6;
    } else {
      napi_throw_type_error(env, "EINVAL", "sendSegments: host is not an IP address");
      return NULL;
    }
  }
  struct iovec iov = {.iov_base = (char *)data + offset, .iov_len = (size_t)length};
  char control[CMSG_SPACE(sizeof(uint16_t))];
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (sslen > 0) {
    msg.msg_name = &ss;
    msg.msg_namelen = sslen;
  }
  if (length > segment) {
    memset(control, 0, sizeof control);
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_UDP;
    cm->cmsg_type = UDP_SEGMENT;
    cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
    uint16_t seg = (uint16_t)segment;
    memcpy(CMSG_DATA(cm), &seg, sizeof seg);
  }
  ssize_t n = sendmsg(fd, &msg, MSG_DONTWAIT);
  napi_value out;
  napi_create_int32(env, n < 0 ? -errno : (int32_t)n, &out);
  return out;
}

static napi_value sd_notify(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  struct sockaddr_un sa;
  char message[4096];
  size_t path_len, message_len;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 ||
      napi_get_value_string_utf8(env, argv[0], sa.sun_path, sizeof sa.sun_path, &path_len) != napi_ok ||
      napi_get_value_string_utf8(env, argv[1], message, sizeof message, &message_len) != napi_ok || path_len == 0) {
    napi_throw_type_error(env, "EINVAL", "sdNotify(path: string, message: string)");
    return NULL;
  }
  /* napi truncates to the buffer: a path that filled it may have been cut, so refuse it. */
  if (path_len >= sizeof sa.sun_path - 1) return throw_errno(env, "sdNotify", ENAMETOOLONG);
  if (sa.sun_path[0] == '@') sa.sun_path[0] = '\0'; /* abstract namespace: no trailing NUL counted */
  socklen_t sa_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + path_len + (sa.sun_path[0] == '\0' ? 0 : 1));
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, "socket(AF_UNIX)", errno);
  ssize_t n = sendto(fd, message, message_len, MSG_NOSIGNAL, (struct sockaddr *)&sa, sa_len);
  int err = errno;
  close(fd);
  if (n < 0) return throw_errno(env, "sendto(NOTIFY_SOCKET)", err);
  napi_value out;
  napi_create_int32(env, (int32_t)n, &out);
  return out;
}

/* setAbortiveClose(fd, on): SO_LINGER {on, 0}. While on, a close() the process did not
 * ask for (it was killed) resets the connection instead of sending a FIN that would
 * pass a cut stream off as complete. */
static napi_value set_abortive_close(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int32_t fd;
  bool on;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok || napi_get_value_bool(env, argv[1], &on) != napi_ok) {
    napi_throw_type_error(env, "EINVAL", "setAbortiveClose(fd: number, on: boolean)");
    return NULL;
  }
  struct linger l = {.l_onoff = on ? 1 : 0, .l_linger = 0};
  if (setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l) != 0) return throw_errno(env, "setsockopt(SO_LINGER)", errno);
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"originalDst", NULL, original_dst, NULL, NULL, NULL, napi_default, NULL},
    {"markedSocket", NULL, marked_socket, NULL, NULL, NULL, napi_default, NULL},
    {"closeFd", NULL, closefd, NULL, NULL, NULL, napi_default, NULL},
    {"sendSegments", NULL, send_segments, NULL, NULL, NULL, napi_default, NULL},
    {"sdNotify", NULL, sd_notify, NULL, NULL, NULL, napi_default, NULL},
    {"setAbortiveClose", NULL, set_abortive_close, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
