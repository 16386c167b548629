/* crc32.h: zlib's CRC-32, faster where the CPU can fold it. */
#ifndef SN_CRC32_H
#define SN_CRC32_H

#include <stddef.h>
#include <stdint.h>

/* crc32(crc, buf, len) of zlib: start from 0, chain over pieces. */
uint32_t sn_crc32(uint32_t crc, const void *buf, size_t len);

#endif
