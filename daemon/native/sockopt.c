/*
 * The two socket calls Node does not expose, and nothing more:
 *   originalDst(fd, family)  getsockopt SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST on a
 *                            REDIRECTed accepted socket -> [address, port]
 *   markedSocket(family, mark) a fresh non-blocking TCP socket with SO_MARK set, for
 *                            net.Socket({ fd }) so the daemon's own connections carry
 *                            qmesh's mark before their SYN leaves (iptables exempts it).
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
#include <linux/netfilter_ipv4.h>

#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80
#endif

static napi_value throw_errno(napi_env env, const char *syscall, int err) {
  char msg[160];
  snprintf(msg, sizeof msg, "%s failed: %s", syscall, strerror(err));
  const char *code = err == ENOENT ? "ENOENT" : err == EPERM ? "EPERM" : err == EBADF ? "EBADF"
                   : err == ENOTSOCK ? "ENOTSOCK" : err == EINVAL ? "EINVAL" : err == ENOPROTOOPT ? "ENOPROTOOPT"
                   : err == EAFNOSUPPORT ? "EAFNOSUPPORT" : err == EMFILE ? "EMFILE" : "EIO";
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

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"originalDst", NULL, original_dst, NULL, NULL, NULL, napi_default, NULL},
    {"markedSocket", NULL, marked_socket, NULL, NULL, NULL, napi_default, NULL},
    {"closeFd", NULL, closefd, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, 3, props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
