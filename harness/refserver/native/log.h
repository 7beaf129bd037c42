// Log lines in the Python server's format: "2024-01-02 03:04:05.678 I refserver] message".
#pragma once
#include <cstdarg>
#include <cstdio>
#include <ctime>
#include <sys/time.h>

inline void vlog(char level, const char* fmt, va_list ap) {
  struct timeval tv;
  gettimeofday(&tv, nullptr);
  struct tm tm;
  localtime_r(&tv.tv_sec, &tm);
  char head[64];
  strftime(head, sizeof head, "%Y-%m-%d %H:%M:%S", &tm);
  char msg[4096];
  vsnprintf(msg, sizeof msg, fmt, ap);
  fprintf(stderr, "%s.%03d %c refserver] %s\n", head, int(tv.tv_usec / 1000), level, msg);
  fflush(stderr);
}

inline void logf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
inline void logf(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vlog('I', fmt, ap);
  va_end(ap);
}

inline void logerr(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
inline void logerr(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vlog('E', fmt, ap);
  va_end(ap);
}
