/* A WebAssembly function in C: counts the words of input.text.
 *
 *   ./build                         compiles it (Debian's clang, lld and wasi-libc)
 *   ./deploy http://127.0.0.1:8080  deploys it as WORDCOUNT and activates it
 *
 * The contract is a program's (docs/functions.md): the input document on stdin, one
 * JSON value on stdout, exit status 0. It has no filesystem, no network and no
 * environment but MESH_NODE, MESH_ACTIVATION_ID, MESH_BUDGET_MS and TRACEPARENT.
 * A real function would use a JSON parser; this one looks for "text":"..." to stay
 * a single file with no dependency.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void) {
    static char doc[1 << 20];
    size_t len = fread(doc, 1, sizeof doc - 1, stdin);
    doc[len] = '\0';
    const char *key = strstr(doc, "\"text\":\"");
    if (key == NULL) {
        fprintf(stderr, "input.text is missing\n");
        return 2;
    }
    long words = 0, chars = 0;
    int in_word = 0;
    for (const char *p = key + 8; *p && *p != '"'; p++) {
        if (*p == '\\' && p[1]) p++;
        chars++;
        int space = (*p == ' ' || *p == '\t' || *p == '\n');
        if (!space && !in_word) words++;
        in_word = !space;
    }
    const char *node = getenv("MESH_NODE");
    printf("{\"words\":%ld,\"chars\":%ld,\"counted_by\":\"%s\"}\n", words, chars,
           node ? node : "?");
    return 0;
}
