/* A band of rows of a JPEG, decoded at a DCT-scaled size by the system's libjpeg(-turbo).
 *
 * Prep stores the bottom of each camera image (the crop removes the sky), so it decodes at 1/2,
 * 1/4 or 1/8 size and skips the rows above the band: libjpeg-turbo's jpeg_skip_scanlines still
 * reads their entropy-coded data but does no IDCT, upsampling or colour conversion for them.
 * The rows it returns are the same bytes a whole decode (OpenCV's imread included: the same
 * library, the same ISLOW IDCT and fancy upsampling) gives for those rows.
 *
 * Called through ctypes, which releases the GIL: prep's reader threads decode in parallel.
 */
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>

enum {
  JR_OK = 0,
  JR_OPEN = 1,         /* the file cannot be opened or read */
  JR_DECODE = 2,       /* libjpeg gave up on the data: message in err */
  JR_SIZE = 3,         /* the header's size is not the one the caller expects: dims has it */
  JR_UNSUPPORTED = 4,  /* a colour space or scale this path does not do: use the generic decoder */
  JR_BAND = 5,         /* the requested band does not fit the scaled image */
  JR_CORRUPT = 6       /* libjpeg warned of corrupt data it then papered over (grey blocks): message in err */
};

struct jr_error {
  struct jpeg_error_mgr mgr;
  jmp_buf jump;
  int warned;   /* a warning (msg_level -1) was emitted: corrupt entropy data, a premature end */
  char text[JMSG_LENGTH_MAX];   /* the first warning's words (later trace messages reuse msg_code) */
};

/* libjpeg only warns of corrupt data and decodes on (filling grey): here a warning is a fault. */
static void jr_emit(j_common_ptr cinfo, int msg_level) {
  struct jr_error *e = (struct jr_error *)cinfo->err;
  if (msg_level < 0 && !e->warned) {
    e->warned = 1;
    e->mgr.num_warnings++;
    e->mgr.format_message(cinfo, e->text);
  }
}

static void jr_error_exit(j_common_ptr cinfo) {
  longjmp(((struct jr_error *)cinfo->err)->jump, 1);
}

static void jr_quiet(j_common_ptr cinfo) { (void)cinfo; }   /* no stderr lines from a library */

static unsigned char *read_file(const char *path, unsigned long *size) {
  FILE *f = fopen(path, "rb");
  unsigned char *buf = NULL;
  long n;
  if (!f) return NULL;
  if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) > 0 && fseek(f, 0, SEEK_SET) == 0) {
    buf = (unsigned char *)malloc((size_t)n);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
      free(buf);
      buf = NULL;
    }
    *size = (unsigned long)n;
  }
  fclose(f);
  return buf;
}

/* Rows [row0, row0 + rows) of the image decoded at 1/reduce size, as RGB into out (rows x
 * (width / reduce) x 3, contiguous). expect: the full-size (width, height) the caller's tables
 * declare; on JR_SIZE dims holds the header's. expect NULL: read the header only (dims). */
int renderocc_jpeg_rows(const char *path, int reduce, const int *expect, int row0, int rows,
                        unsigned char *out, int *dims, char *err, int err_len) {
  struct jpeg_decompress_struct cinfo;
  struct jr_error jerr;
  unsigned long nread = 0;
  unsigned char *volatile data = read_file(path, &nread);
  volatile unsigned long size = nread;   /* live across setjmp */
  JSAMPROW band[16];
  int status = JR_OK, k, n;
  if (!data) return JR_OPEN;
  if (reduce != 1 && reduce != 2 && reduce != 4 && reduce != 8) {
    free(data);
    return JR_UNSUPPORTED;
  }
  cinfo.err = jpeg_std_error(&jerr.mgr);
  jerr.mgr.error_exit = jr_error_exit;
  jerr.mgr.output_message = jr_quiet;
  jerr.mgr.emit_message = jr_emit;
  jerr.warned = 0;
  if (setjmp(jerr.jump)) {
    jerr.mgr.format_message((j_common_ptr)&cinfo, err);
    (void)err_len;
    jpeg_destroy_decompress(&cinfo);
    free(data);
    return JR_DECODE;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, data, size);
  jpeg_read_header(&cinfo, TRUE);
  dims[0] = (int)cinfo.image_width;
  dims[1] = (int)cinfo.image_height;
  if (!expect) {
    status = JR_OK;   /* header only */
  } else if (dims[0] != expect[0] || dims[1] != expect[1]) {
    status = JR_SIZE;
  } else if (cinfo.jpeg_color_space != JCS_GRAYSCALE && cinfo.jpeg_color_space != JCS_YCbCr &&
             cinfo.jpeg_color_space != JCS_RGB) {
    status = JR_UNSUPPORTED;   /* CMYK / YCCK: libjpeg makes no RGB of them */
  } else {
    cinfo.scale_num = 1;
    cinfo.scale_denom = (unsigned int)reduce;
    cinfo.out_color_space = JCS_RGB;
    jpeg_start_decompress(&cinfo);
    if (row0 < 0 || rows < 0 || (unsigned long)row0 + (unsigned long)rows > cinfo.output_height ||
        cinfo.output_components != 3 || (int)cinfo.output_width * reduce != dims[0]) {
      status = JR_BAND;
    } else {
      if (row0 > 0) jpeg_skip_scanlines(&cinfo, (JDIMENSION)row0);
      while ((int)cinfo.output_scanline < row0 + rows) {
        n = row0 + rows - (int)cinfo.output_scanline;
        n = n < 16 ? n : 16;
        for (k = 0; k < n; ++k)
          band[k] = out + (size_t)(cinfo.output_scanline - row0 + k) * cinfo.output_width * 3;
        jpeg_read_scanlines(&cinfo, band, (JDIMENSION)n);
      }
    }
    if (cinfo.output_scanline == cinfo.output_height)
      jpeg_finish_decompress(&cinfo);
    else
      jpeg_abort_decompress(&cinfo);
  }
  if (status == JR_OK && jerr.warned && expect) {
    snprintf(err, (size_t)err_len, "%s", jerr.text);   /* the warning's own words */
    status = JR_CORRUPT;
  }
  jpeg_destroy_decompress(&cinfo);
  free(data);
  return status;
}

/* The header's (width, height) into dims. */
int renderocc_jpeg_size(const char *path, int *dims, char *err, int err_len) {
  return renderocc_jpeg_rows(path, 1, NULL, 0, 0, NULL, dims, err, err_len);
}
