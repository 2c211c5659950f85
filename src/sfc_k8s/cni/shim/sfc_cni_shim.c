// SPDX-License-Identifier: Apache-2.0
/*
 * sfc-cni, the compiled shim installed on nodes: it hands each CNI call to the node agent.
 *
 * The container runtime (Multus, containerd) runs this executable as it runs any CNI plugin. It
 * forwards the CNI_* variables and the network config (stdin) over a unix socket to the sfc-k8s
 * agent's CNI server (sfc_k8s/cni/server.py), which runs the plugin, and passes back exactly what
 * the plugin printed and its exit code. Built statically with musl, it needs nothing on the node:
 * no Python, no particular libc. docs/cni.md explains the choice.
 *
 * - VERSION is answered here, so it works with the agent down.
 * - DEL must succeed even when the agent is down (pods would stay stuck otherwise): an
 *   undeliverable DEL is spooled (written aside, then renamed into the spool directory) and
 *   reported as done; the agent replays the spool when it starts.
 * - ADD and CHECK (and the rest) with the agent down print a CNI error object (code 11, try
 *   again later) saying where the agent was expected.
 *
 * The socket and the spool directory come from the config's "agentSocket" and "spoolDir" (plain
 * strings), else from the defaults of sfc_cni_wire.h, which `python -m sfc_k8s.cni.wire --header`
 * generates: the protocol and its defaults are defined once, in sfc_k8s/cni/wire.py.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "sfc_cni_wire.h"

#define CODE_TRY_AGAIN_LATER 11
#define CODE_INCOMPATIBLE_VERSION 1
#define CODE_IO_FAILURE 5
#define CODE_INVALID_CONFIG 7
#define PATH_CAP 4096
#define MSG_CAP 1024

static const char *const supported_versions[] = {SFC_CNI_SUPPORTED_VERSIONS};
#define N_VERSIONS (sizeof(supported_versions) / sizeof(supported_versions[0]))

static char request[SFC_CNI_MAX_REQUEST];
static char reply[SFC_CNI_MAX_REPLY];

/* The cniVersion errors are written in: the config's when supported, else the latest. */
static const char *error_version = SFC_CNI_LATEST_VERSION;

/* ---- output ---------------------------------------------------------------------------- */

static int write_all(int fd, const char *data, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, data, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		data += n;
		len -= (size_t)n;
	}
	return 0;
}

/* `text` as a JSON string body: quotes, backslashes and control characters escaped. */
static void json_escape(char *out, size_t cap, const char *text)
{
	size_t o = 0;
	for (const unsigned char *p = (const unsigned char *)text; *p && o + 7 < cap; p++) {
		if (*p == '"' || *p == '\\') {
			out[o++] = '\\';
			out[o++] = (char)*p;
		} else if (*p < 0x20) {
			o += (size_t)snprintf(out + o, cap - o, "\\u%04x", *p);
		} else {
			out[o++] = (char)*p;
		}
	}
	out[o] = '\0';
}

/* Print the CNI error object for `code` on stdout, log the message on stderr, exit 1. */
__attribute__((noreturn, format(printf, 2, 3))) static void fail(int code, const char *fmt, ...)
{
	char msg[MSG_CAP], escaped[MSG_CAP * 6 + 1], body[MSG_CAP * 6 + 128];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	json_escape(escaped, sizeof(escaped), msg);
	int n = snprintf(body, sizeof(body), "{\"cniVersion\": \"%s\", \"code\": %d, \"msg\": \"%s\"}\n",
			 error_version, code, escaped);
	if (n > 0)
		(void)write_all(STDOUT_FILENO, body, (size_t)n < sizeof(body) ? (size_t)n : sizeof(body) - 1);
	fprintf(stderr, "sfc-cni: %s (code %d)\n", msg, code);
	exit(1);
}

/* ---- a minimal reader for the config's top-level string members ----------------------- */

static const char *skip_ws(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	return p;
}

/* Past the string starting at the quote `p`; NULL if it does not end. */
static const char *skip_string(const char *p, const char *end)
{
	for (p++; p < end; p++) {
		if (*p == '\\')
			p++;
		else if (*p == '"')
			return p + 1;
	}
	return NULL;
}

/* Past the JSON value at `p` (objects and arrays by bracket depth); NULL if malformed. */
static const char *skip_value(const char *p, const char *end)
{
	if (p >= end)
		return NULL;
	if (*p == '"')
		return skip_string(p, end);
	if (*p != '{' && *p != '[') {
		while (p < end && !strchr(",}] \t\r\n", *p))
			p++;
		return p;
	}
	int depth = 0;
	while (p < end) {
		if (*p == '"') {
			p = skip_string(p, end);
			if (!p)
				return NULL;
			continue;
		}
		if (*p == '{' || *p == '[')
			depth++;
		else if ((*p == '}' || *p == ']') && --depth == 0)
			return p + 1;
		p++;
	}
	return NULL;
}

/*
 * Copy the top-level member `key` of the JSON object in text[0..len) into `out` when it is a
 * string without escapes. Returns 1 if found, 0 if absent or the text is not a JSON object (the
 * agent reports a bad config; the shim only looks for its own keys), -1 if the member is there but
 * not a plain string that fits.
 */
static int config_string(const char *text, size_t len, const char *key, char *out, size_t cap)
{
	const char *end = text + len, *p = skip_ws(text, end);
	size_t key_len = strlen(key);
	if (p >= end || *p != '{')
		return 0;
	for (p = skip_ws(p + 1, end); p < end && *p == '"';) {
		const char *name = p + 1, *name_end = skip_string(p, end);
		if (!name_end)
			return 0;
		p = skip_ws(name_end, end);
		if (p >= end || *p != ':')
			return 0;
		p = skip_ws(p + 1, end);
		if ((size_t)(name_end - 1 - name) == key_len && !memcmp(name, key, key_len)) {
			const char *value_end = p < end && *p == '"' ? skip_string(p, end) : NULL;
			size_t n = value_end ? (size_t)(value_end - p - 2) : 0;
			if (!value_end || n == 0 || n >= cap || memchr(p + 1, '\\', n))
				return -1;
			memcpy(out, p + 1, n);
			out[n] = '\0';
			return 1;
		}
		p = skip_value(p, end);
		if (!p)
			return 0;
		p = skip_ws(p, end);
		if (p < end && *p == ',')
			p = skip_ws(p + 1, end);
	}
	return 0;
}

static const char *supported_version(const char *version)
{
	for (size_t i = 0; i < N_VERSIONS; i++)
		if (!strcmp(version, supported_versions[i]))
			return supported_versions[i];
	return NULL;
}

/* ---- request ---------------------------------------------------------------------------- */

static const char *const forwarded_env[] = {SFC_CNI_FORWARDED_ENV};

/* Encode the CNI_* variables into `request`; returns the length used. */
static size_t encode_env(void)
{
	size_t len = strlen(SFC_CNI_MAGIC);
	memcpy(request, SFC_CNI_MAGIC, len);
	for (size_t i = 0; i < sizeof(forwarded_env) / sizeof(forwarded_env[0]); i++) {
		const char *value = getenv(forwarded_env[i]);
		if (!value)
			continue;
		int n = snprintf(request + len, sizeof(request) - len, "%s=%s", forwarded_env[i], value);
		if (n < 0 || (size_t)n + 2 >= sizeof(request) - len)
			fail(CODE_INVALID_CONFIG, "%s is too long: the whole request must fit in %d bytes",
			     forwarded_env[i], SFC_CNI_MAX_REQUEST);
		len += (size_t)n + 1; /* keep the NUL snprintf wrote */
	}
	request[len++] = '\0';
	return len;
}

/* Append stdin to `request` from `start`; returns the total length. */
static size_t read_stdin(size_t start)
{
	size_t len = start;
	for (;;) {
		if (len == sizeof(request))
			fail(CODE_INVALID_CONFIG,
			     "the network config on stdin is too large: expected at most %zu bytes",
			     sizeof(request) - start);
		ssize_t n = read(STDIN_FILENO, request + len, sizeof(request) - len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			fail(CODE_IO_FAILURE, "cannot read the network config from stdin: %s",
			     strerror(errno));
		}
		if (n == 0)
			return len;
		len += (size_t)n;
	}
}

/* ---- agent ------------------------------------------------------------------------------ */

/* Connect to the agent's socket; -1 with errno set when it is not there. */
static int connect_agent(const char *path)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(addr.sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	strcpy(addr.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	struct timeval timeout = {.tv_sec = SFC_CNI_REPLY_TIMEOUT};
	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout)) < 0 ||
	    connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		int saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	return fd;
}

/* Send the request, read the whole reply; its length, or -1 with errno set. */
static ssize_t exchange(int fd, size_t request_len)
{
	if (write_all(fd, request, request_len) < 0 || shutdown(fd, SHUT_WR) < 0)
		return -1;
	size_t len = 0;
	for (;;) {
		if (len == sizeof(reply)) {
			errno = EMSGSIZE;
			return -1;
		}
		ssize_t n = read(fd, reply + len, sizeof(reply) - len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (n == 0)
			return (ssize_t)len;
		len += (size_t)n;
	}
}

/* Write the reply's stdout and stderr where they belong; returns the plugin's exit code. */
static int relay_reply(size_t len)
{
	size_t magic_len = strlen(SFC_CNI_MAGIC_REPLY);
	char *newline = memchr(reply, '\n', len);
	int code, n = 0;
	size_t out_len;
	if (!newline || len < magic_len || memcmp(reply, SFC_CNI_MAGIC_REPLY, magic_len))
		fail(CODE_IO_FAILURE, "the node agent sent a malformed reply (is it the same version?)");
	*newline = '\0';
	if (sscanf(reply + magic_len, " %d %zu%n", &code, &out_len, &n) != 2 ||
	    reply + magic_len + n != newline)
		fail(CODE_IO_FAILURE, "the node agent sent a malformed reply header");
	const char *body = newline + 1;
	size_t body_len = len - (size_t)(body - reply);
	if (out_len > body_len)
		fail(CODE_IO_FAILURE, "the node agent's reply is cut short");
	if (write_all(STDOUT_FILENO, body, out_len) < 0)
		exit(1); /* nowhere left to report it */
	(void)write_all(STDERR_FILENO, body + out_len, body_len - out_len);
	return code;
}

/* ---- spool (DEL with the agent down) ----------------------------------------------------- */

/* mkdir -p `path` (0700: requests name containers); 0 or -1 with errno. */
static int make_dirs(const char *path)
{
	char partial[PATH_CAP];
	size_t len = strlen(path);
	if (len >= sizeof(partial)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(partial, path, len + 1);
	for (char *p = partial + 1;; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		char saved = *p;
		*p = '\0';
		if (mkdir(partial, 0700) < 0 && errno != EEXIST)
			return -1;
		*p = saved;
		if (saved == '\0')
			return 0;
	}
}

/* Write the request aside, fsync it, rename it into `dir`, fsync `dir`; 0 or -1 with errno. */
static int spool(const char *dir, size_t request_len, char *spooled, size_t cap)
{
	char tmp[PATH_CAP];
	struct timespec now;
	if (make_dirs(dir) < 0 || clock_gettime(CLOCK_REALTIME, &now) < 0)
		return -1;
	int n = snprintf(tmp, sizeof(tmp), "%s/.tmp-%ld", dir, (long)getpid());
	int m = snprintf(spooled, cap, "%s/" SFC_CNI_SPOOL_PREFIX "%lld.%09ld-%ld" SFC_CNI_SPOOL_SUFFIX,
			 dir, (long long)now.tv_sec, now.tv_nsec, (long)getpid());
	if (n < 0 || (size_t)n >= sizeof(tmp) || m < 0 || (size_t)m >= cap) {
		errno = ENAMETOOLONG;
		return -1;
	}
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -1;
	if (write_all(fd, request, request_len) < 0 || fsync(fd) < 0) {
		int saved = errno;
		close(fd);
		unlink(tmp);
		errno = saved;
		return -1;
	}
	if (close(fd) < 0 || rename(tmp, spooled) < 0) {
		int saved = errno;
		unlink(tmp);
		errno = saved;
		return -1;
	}
	int dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dir_fd < 0)
		return -1;
	int synced = fsync(dir_fd);
	close(dir_fd);
	return synced;
}

/* The agent could not take a DEL (`why`): spool it for replay and report success. */
static int spool_del(const char *dir, const char *socket_path, const char *why, size_t len)
{
	char spooled[PATH_CAP];
	if (spool(dir, len, spooled, sizeof(spooled)) < 0)
		fail(CODE_TRY_AGAIN_LATER,
		     "the sfc-k8s node agent is not reachable at %s (%s) and the DEL could not be spooled"
		     " in %s: %s",
		     socket_path, why, dir, strerror(errno));
	fprintf(stderr,
		"sfc-cni: the sfc-k8s node agent is not reachable at %s (%s): DEL spooled as %s, the"
		" agent replays it when it starts\n",
		socket_path, why, spooled);
	return 0;
}

/* ---- main ------------------------------------------------------------------------------- */

static int answer_version(const char *config, size_t len)
{
	char asked[32], expected[128] = "";
	const char *version = SFC_CNI_LATEST_VERSION;
	int found = config_string(config, len, "cniVersion", asked, sizeof(asked));
	if (found != 0) {
		version = found > 0 ? supported_version(asked) : NULL;
		for (size_t i = 0; !version && i < N_VERSIONS; i++) {
			strncat(expected, i ? ", " : "", sizeof(expected) - strlen(expected) - 1);
			strncat(expected, supported_versions[i], sizeof(expected) - strlen(expected) - 1);
		}
		if (!version)
			fail(CODE_INCOMPATIBLE_VERSION, "cniVersion=\"%s\": expected one of %s",
			     found > 0 ? asked : "?", expected);
	}
	printf("{\"cniVersion\": \"%s\", \"supportedVersions\": [", version);
	for (size_t i = 0; i < N_VERSIONS; i++)
		printf("%s\"%s\"", i ? ", " : "", supported_versions[i]);
	printf("]}\n");
	return fflush(stdout) == 0 ? 0 : 1;
}

/* The config's value for `key`, else `fallback`; a key that is not a plain string is an error. */
static const char *setting(const char *config, size_t len, const char *key, const char *fallback,
			   char *out, size_t cap)
{
	int found = config_string(config, len, key, out, cap);
	if (found < 0)
		fail(CODE_INVALID_CONFIG,
		     "%s: expected an absolute path as a JSON string of fewer than %zu bytes, without"
		     " escapes",
		     key, cap);
	if (found > 0 && out[0] != '/')
		fail(CODE_INVALID_CONFIG, "%s=\"%s\": expected an absolute path", key, out);
	return found > 0 ? out : fallback;
}

int main(int argc, char **argv)
{
	if (argc > 1 && (!strcmp(argv[1], "--version") || !strcmp(argv[1], "--help") ||
			 !strcmp(argv[1], "-h") || !strcmp(argv[1], "version"))) {
		fprintf(stderr,
			"sfc-cni %s (shim): the sfc-k8s CNI plugin; hands CNI_COMMAND=... calls to the"
			" node agent at %s\n",
			SFC_CNI_VERSION, SFC_CNI_DEFAULT_SOCKET);
		return 0;
	}
	size_t env_len = encode_env();
	size_t len = read_stdin(env_len);
	const char *config = request + env_len;
	size_t config_len = len - env_len;
	char version[32], socket_buf[PATH_CAP], spool_buf[PATH_CAP];
	if (config_string(config, config_len, "cniVersion", version, sizeof(version)) > 0 &&
	    supported_version(version))
		error_version = supported_version(version);
	const char *command = getenv("CNI_COMMAND");
	if (command && !strcmp(command, "VERSION"))
		return answer_version(config, config_len);
	const char *socket_path = setting(config, config_len, SFC_CNI_SOCKET_KEY,
					  SFC_CNI_DEFAULT_SOCKET, socket_buf, sizeof(socket_buf));
	const char *spool_dir = setting(config, config_len, SFC_CNI_SPOOL_KEY,
					SFC_CNI_DEFAULT_SPOOL_DIR, spool_buf, sizeof(spool_buf));
	int is_del = command && !strcmp(command, "DEL");

	int fd = connect_agent(socket_path);
	if (fd < 0) {
		const char *why = strerror(errno);
		if (is_del)
			return spool_del(spool_dir, socket_path, why, len);
		fail(CODE_TRY_AGAIN_LATER,
		     "the sfc-k8s node agent is not reachable at %s (%s): is the sfc-k8s-agent pod"
		     " running on this node?",
		     socket_path, why);
	}
	ssize_t got = exchange(fd, len);
	if (got < 0) {
		const char *why = strerror(errno);
		close(fd);
		if (is_del)
			return spool_del(spool_dir, socket_path, why, len);
		fail(CODE_TRY_AGAIN_LATER, "the sfc-k8s node agent at %s did not answer: %s", socket_path,
		     why);
	}
	close(fd);
	if (got == 0) { /* the agent went away mid-call */
		if (is_del)
			return spool_del(spool_dir, socket_path, "closed without a reply", len);
		fail(CODE_TRY_AGAIN_LATER,
		     "the sfc-k8s node agent at %s closed the connection without a reply (restarting?)",
		     socket_path);
	}
	return relay_reply((size_t)got);
}
