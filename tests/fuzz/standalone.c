/*
 * standalone.c: runs a fuzz target over its seed corpus (files or
 * directories given as arguments), for builds without libFuzzer.  The
 * clang build (-Dfuzz=true) runs the real fuzzer instead.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int
one(const char *path)
{
	FILE *f = fopen(path, "rb");
	unsigned char *b;
	long n;

	if (f == NULL)
		return 1;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	if ((b = malloc((size_t)n + 1)) == NULL || fread(b, 1, (size_t)n, f) != (size_t)n) {
		fclose(f);
		free(b);
		return 1;
	}
	fclose(f);
	LLVMFuzzerTestOneInput(b, (size_t)n);
	/* and every prefix, a cheap way to reach truncation paths */
	for (long i = 0; i < n; i += 1 + n / 64)
		LLVMFuzzerTestOneInput(b, (size_t)i);
	free(b);
	return 0;
}

int
main(int argc, char **argv)
{
	int i, count = 0;

	for (i = 1; i < argc; i++) {
		struct stat st;
		if (stat(argv[i], &st) == -1)
			continue;
		if (S_ISDIR(st.st_mode)) {
			DIR *d = opendir(argv[i]);
			struct dirent *de;
			while (d && (de = readdir(d)) != NULL) {
				char p[4096];
				if (de->d_name[0] == '.')
					continue;
				snprintf(p, sizeof(p), "%s/%s", argv[i], de->d_name);
				count += one(p) == 0;
			}
			if (d)
				closedir(d);
		} else
			count += one(argv[i]) == 0;
	}
	printf("replayed %d corpus file(s)\n", count);
	return count > 0 ? 0 : 77;
}
