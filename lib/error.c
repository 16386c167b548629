#include "error.h"

#include <stdarg.h>
#include <stdio.h>

static _Thread_local char detail[512];
static _Thread_local int last_code;

const char *sn_strerror(int code)
{
	switch (code) {
	case SN_OK: return "success";
	case SN_EIO: return "I/O error";
	case SN_ETRUNC: return "truncated file";
	case SN_EFORMAT: return "malformed input";
	case SN_ECRC: return "crc32 mismatch";
	case SN_ENOMEM: return "out of memory";
	case SN_EINVAL: return "invalid argument";
	case SN_ENET: return "bad net definition";
	case SN_EMISMATCH: return "inputs do not match";
	case SN_ENONFINITE: return "non-finite value";
	case SN_EQUORUM: return "quorum not met";
	case SN_EUNSUPPORTED: return "unsupported";
	}
	return "unknown error";
}

int sn_fail(int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(detail, sizeof detail, fmt, ap);
	va_end(ap);
	last_code = code;
	return code;
}

const char *sn_errdetail(void)
{
	return detail[0] ? detail : sn_strerror(last_code);
}

void sn_errclear(void)
{
	detail[0] = 0;
	last_code = 0;
}

int sn_exit_code(int err)
{
	if (err >= 0)
		return SN_EXIT_OK;
	if (err == SN_ENONFINITE)
		return SN_EXIT_DIVERGED;
	if (err == SN_EQUORUM)
		return SN_EXIT_QUORUM;
	if (err == SN_EINVAL)
		return SN_EXIT_USAGE;
	return SN_EXIT_RUNTIME;
}
