/*
 * tts-espeak — text-to-speech with eSpeak NG, written with the corral C SDK.
 *
 * generate: {"text": "Hello", "voice": "en", "rate": 175} (or a text/plain
 *           body) in, a complete audio/wav out: RIFF/WAVE, PCM 16-bit mono
 *           at espeak's sample rate. "format": "l16" answers raw PCM instead
 *           (audio/L16, big-endian as RFC 3551 has it). With a stream
 *           ("stream": true) the audio is sent as espeak makes it, 60 ms at
 *           a time: a WAV header whose sizes say "unknown length"
 *           (0xFFFFFFFF, as streaming players expect), then the samples.
 * infer:    BYTES TEXT [1] (and optional BYTES VOICE [1]; request parameter
 *           `rate`) in, INT16 AUDIO [n_samples] and INT32 SAMPLE_RATE [1] out.
 *
 * Manifest parameters: default_voice (en), default_rate (175) and
 * espeak_data (a directory holding espeak-ng-data; the system's by default).
 *
 * espeak-ng is one process-wide synthesizer that is not reentrant and must be
 * initialised only once, so every call into it holds tts.lock; with
 * `concurrency` above 1 requests are parsed in parallel but spoken one at a
 * time.
 */
#define _POSIX_C_SOURCE 200809L
#include "corral_worker.h"

#include <espeak-ng/espeak_ng.h>
#include <espeak-ng/speak_lib.h>

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define RATE_MIN espeakRATE_MINIMUM /* 80 words per minute */
#define RATE_MAX espeakRATE_MAXIMUM /* 450 */
#define DEFAULT_RATE espeakRATE_NORMAL
#define MAX_TEXT_BYTES 20000
/* Audio beyond this would not fit one protocol frame (1 GiB) with room to spare. */
#define MAX_AUDIO_BYTES (512u << 20)
#define WAV_HEADER_SIZE 44
/* Voices named in "unknown voice" errors, when espeak ships them. */
static const char *const suggested_voices[] = {"en", "en-us", "en-gb", "fr", "de", "es", "it", "pt", "nl", "pl",
                                               "ru", "sv", "cmn", "ja", "hi", "ar"};

typedef struct tts {
    pthread_mutex_t lock; /* held around every espeak call */
    int sample_rate;
    char *default_voice; /* owned; one of voices */
    int default_rate;
    char **voices; /* owned: every name accepted as a voice, sorted */
    size_t nvoices;
    char *suggestion; /* owned: "en, en-us, ..." for error messages */
} tts;

/*
 * Where samples go: collected in buf (after room for a header), or, for a
 * stream, sent to res as they come (buf is then scratch for one piece).
 */
typedef struct pcm {
    unsigned char *buf;
    size_t len, cap;
    int big_endian;          /* audio/L16 */
    corral_response *stream; /* non-NULL: send each piece at once */
    const char *stream_type;
    int too_long;  /* past MAX_AUDIO_BYTES: synthesis was aborted */
    int no_memory; /* realloc failed: synthesis was aborted */
    int send_failed; /* a negative errno from corral_stream_write other than -ECANCELED */
    int cancelled;   /* the client went away: synthesis was aborted */
} pcm;

/* The buffer the synth callback fills; espeak's callback has no reliable
 * per-call context, and synthesis is serialised by tts.lock anyway. */
static pcm *current_pcm;

static int on_samples(short *wav, int n, espeak_EVENT *events)
{
    (void)events;
    pcm *out = current_pcm;
    if (!wav || n <= 0)
        return 0;
    size_t add = (size_t)n * 2;
    if (out->stream)
        out->len = 0; /* the previous piece is out */
    if (out->len + add > MAX_AUDIO_BYTES) {
        out->too_long = 1;
        return 1;
    }
    if (out->len + add > out->cap) {
        size_t cap = out->cap ? out->cap : 64 * 1024;
        while (cap < out->len + add)
            cap *= 2;
        unsigned char *grown = realloc(out->buf, cap);
        if (!grown) {
            out->no_memory = 1;
            return 1;
        }
        out->buf = grown;
        out->cap = cap;
    }
    unsigned char *p = out->buf + out->len;
    int hi = out->big_endian, lo = !out->big_endian;
    for (int i = 0; i < n; i++) {
        unsigned short s = (unsigned short)wav[i];
        p[2 * i + hi] = (unsigned char)s;
        p[2 * i + lo] = (unsigned char)(s >> 8);
    }
    out->len += add;
    if (!out->stream)
        return 0;
    /* Blocks while the client is behind: espeak waits with us. */
    int rc = corral_stream_write(out->stream, out->stream_type, out->buf, out->len);
    if (rc == -ECANCELED)
        out->cancelled = 1;
    else if (rc < 0)
        out->send_failed = rc;
    return rc < 0; /* 1 aborts the synthesis */
}

/* ---- voices ---- */

static int cmp_names(const void *a, const void *b)
{
    return strcasecmp(*(char *const *)a, *(char *const *)b);
}

/* The canonical spelling of a voice name, or NULL if espeak has no such voice. */
static const char *find_voice(const tts *t, const char *name)
{
    if (!name)
        return NULL;
    char *const *hit = bsearch(&name, t->voices, t->nvoices, sizeof *t->voices, cmp_names);
    return hit ? *hit : NULL;
}

static int add_voice_name(tts *t, size_t *cap, const char *name)
{
    if (!*name)
        return 0;
    if (t->nvoices == *cap) {
        size_t grown_cap = *cap ? *cap * 2 : 256;
        char **grown = realloc(t->voices, grown_cap * sizeof *grown);
        if (!grown)
            return -ENOMEM;
        t->voices = grown;
        *cap = grown_cap;
    }
    t->voices[t->nvoices] = strdup(name);
    if (!t->voices[t->nvoices])
        return -ENOMEM;
    t->nvoices++;
    return 0;
}

/* Accepts each voice's language codes ("en-us") and identifier ("gmw/en-US"). */
static int collect_voices(tts *t)
{
    size_t cap = 0;
    const espeak_VOICE **list = espeak_ListVoices(NULL);
    for (size_t i = 0; list && list[i]; i++) {
        /* languages: a priority byte, a NUL-terminated code, repeated; ends with a 0 byte. */
        const char *lang = list[i]->languages;
        while (lang && *lang) {
            if (add_voice_name(t, &cap, lang + 1) < 0)
                return -ENOMEM;
            lang += 1 + strlen(lang + 1) + 1;
        }
        if (list[i]->identifier && add_voice_name(t, &cap, list[i]->identifier) < 0)
            return -ENOMEM;
    }
    qsort(t->voices, t->nvoices, sizeof *t->voices, cmp_names);
    size_t kept = 0;
    for (size_t i = 0; i < t->nvoices; i++) {
        if (kept > 0 && strcasecmp(t->voices[kept - 1], t->voices[i]) == 0)
            free(t->voices[i]);
        else
            t->voices[kept++] = t->voices[i];
    }
    t->nvoices = kept;

    size_t len = 0, n = 0;
    char buf[256] = "";
    for (size_t i = 0; i < sizeof suggested_voices / sizeof suggested_voices[0]; i++) {
        if (!find_voice(t, suggested_voices[i]))
            continue;
        len += (size_t)snprintf(buf + len, sizeof buf - len, "%s%s", n++ ? ", " : "", suggested_voices[i]);
    }
    char tail[96];
    snprintf(tail, sizeof tail, " (%zu voice names in all; `espeak-ng --voices` lists them)", t->nvoices);
    t->suggestion = malloc(strlen(buf) + strlen(tail) + 1);
    if (!t->suggestion)
        return -ENOMEM;
    strcpy(t->suggestion, buf);
    strcat(t->suggestion, tail);
    return t->nvoices > 0 ? 0 : -ENOENT;
}

/* ---- synthesis ---- */

/* Speaks text (NUL-terminated) into out; 0, or an error recorded in res. */
static int speak(tts *t, const char *text, const char *voice, int rate, pcm *out, corral_response *res)
{
    pthread_mutex_lock(&t->lock);
    espeak_ERROR err = espeak_SetVoiceByName(voice);
    if (err == EE_OK)
        err = espeak_SetParameter(espeakRATE, rate, 0);
    if (err == EE_OK) {
        current_pcm = out;
        err = espeak_Synth(text, strlen(text) + 1, 0, POS_CHARACTER, 0, espeakCHARS_UTF8, NULL, NULL);
        current_pcm = NULL;
    }
    pthread_mutex_unlock(&t->lock);

    if (out->cancelled)
        return 0; /* nobody listens: a quiet end frees the instance */
    if (out->send_failed)
        return corral_response_error(res, 500, NULL, "sending audio failed: %s", strerror(-out->send_failed));
    if (out->too_long)
        return corral_bad_request(res, "the text makes more than %u MiB of audio", MAX_AUDIO_BYTES >> 20);
    if (out->no_memory)
        return corral_response_error(res, 500, "MemoryError", "out of memory synthesising %zu bytes of text",
                                     strlen(text));
    if (err != EE_OK)
        return corral_response_error(res, 500, "EspeakError", "espeak-ng failed (error %d) with voice '%s'", err,
                                     voice);
    return 0;
}

/* Checks text, voice and rate; fills *voice_out with the canonical voice name. */
static int check_args(tts *t, const char *text, size_t text_len, const char *voice, int64_t rate,
                      const char **voice_out, corral_response *res)
{
    size_t i = 0;
    while (i < text_len && isspace((unsigned char)text[i]))
        i++;
    if (i == text_len)
        return corral_bad_request(res, "text is empty");
    if (text_len > MAX_TEXT_BYTES)
        return corral_bad_request(res, "text is %zu bytes long; at most %d are accepted", text_len,
                                  MAX_TEXT_BYTES);
    *voice_out = find_voice(t, voice);
    if (!*voice_out)
        return corral_bad_request(res, "unknown voice '%s'; valid voices include %s", voice, t->suggestion);
    if (rate < RATE_MIN || rate > RATE_MAX)
        return corral_bad_request(res, "rate must be between %d and %d words per minute, not %lld", RATE_MIN,
                                  RATE_MAX, (long long)rate);
    return 0;
}

static void put_u32le(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put_u16le(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}

/* Sizes in the header of a WAV whose length is not known when it starts. */
#define WAV_UNKNOWN_LENGTH 0xFFFFFFFFu

/* The canonical 44-byte header of a PCM 16-bit mono WAV file. */
static void wav_header(unsigned char *h, uint32_t data_bytes, uint32_t sample_rate)
{
    memcpy(h, "RIFF", 4);
    put_u32le(h + 4, data_bytes == WAV_UNKNOWN_LENGTH ? WAV_UNKNOWN_LENGTH : 36 + data_bytes);
    memcpy(h + 8, "WAVEfmt ", 8);
    put_u32le(h + 16, 16);              /* fmt chunk size */
    put_u16le(h + 20, 1);               /* PCM */
    put_u16le(h + 22, 1);               /* mono */
    put_u32le(h + 24, sample_rate);     /* frames per second */
    put_u32le(h + 28, sample_rate * 2); /* bytes per second */
    put_u16le(h + 32, 2);               /* bytes per frame */
    put_u16le(h + 34, 16);              /* bits per sample */
    memcpy(h + 36, "data", 4);
    put_u32le(h + 40, data_bytes);
}

static int tts_generate(void *state, const corral_request *req, corral_response *res)
{
    tts *t = state;
    const json_t *body = corral_request_json(req);
    const char *text, *voice = t->default_voice, *canonical;
    size_t text_len;
    int64_t rate = t->default_rate;
    char *plain = NULL;
    int l16 = 0;

    if (body) {
        if (!json_is_object(body))
            return corral_bad_request(res, "expected a JSON object such as {\"text\": \"Hello\", \"voice\": \"en\"}");
        const json_t *jt = json_object_get(body, "text");
        const json_t *jv = json_object_get(body, "voice");
        const json_t *jr = json_object_get(body, "rate");
        if (!jt)
            return corral_bad_request(res, "text is required");
        if (!json_is_string(jt))
            return corral_bad_request(res, "text must be a string");
        if (jv && !json_is_null(jv) && !json_is_string(jv))
            return corral_bad_request(res, "voice must be a string");
        if (jr && !json_is_null(jr) && !json_is_integer(jr))
            return corral_bad_request(res, "rate must be an integer (words per minute)");
        const json_t *jf = json_object_get(body, "format");
        const char *format = json_is_string(jf) ? json_string_value(jf) : NULL;
        if (jf && !json_is_null(jf) && (!format || (strcasecmp(format, "wav") && strcasecmp(format, "l16"))))
            return corral_bad_request(res, "format must be \"wav\" (the default) or \"l16\" (raw PCM)");
        l16 = format && strcasecmp(format, "l16") == 0;
        text = json_string_value(jt);
        text_len = json_string_length(jt);
        if (json_is_string(jv))
            voice = json_string_value(jv);
        if (json_is_integer(jr))
            rate = json_integer_value(jr);
    } else if (strncasecmp(corral_request_content_type(req), "text/plain", 10) == 0) {
        const void *raw = corral_request_body(req, &text_len);
        if (!corral_utf8_valid(raw, text_len) || memchr(raw, '\0', text_len))
            return corral_bad_request(res, "the text/plain body is not UTF-8 text");
        plain = malloc(text_len + 1);
        if (!plain)
            return -ENOMEM;
        memcpy(plain, raw, text_len);
        plain[text_len] = '\0';
        text = plain;
    } else {
        return corral_bad_request(res, "expected a JSON object such as {\"text\": \"Hello\", \"voice\": \"en\"} "
                                       "or a text/plain body");
    }

    int rc = check_args(t, text, text_len, voice, rate, &canonical, res);
    char l16_type[64];
    snprintf(l16_type, sizeof l16_type, "audio/L16; rate=%d; channels=1", t->sample_rate);
    const char *content_type = l16 ? l16_type : "audio/wav";
    pcm out = {.big_endian = l16};
    if (rc == 0 && corral_request_streamed(req)) {
        out.stream = res;
        out.stream_type = content_type;
        unsigned char header[WAV_HEADER_SIZE];
        wav_header(header, WAV_UNKNOWN_LENGTH, (uint32_t)t->sample_rate);
        rc = l16 ? 0 : corral_stream_write(res, content_type, header, sizeof header);
        if (rc == 0)
            rc = speak(t, text, canonical, (int)rate, &out, res);
        else if (rc == -ECANCELED)
            rc = 0;
        free(plain);
        free(out.buf);
        return rc;
    }
    size_t reserve = l16 ? 0 : WAV_HEADER_SIZE;
    if (rc == 0) {
        /* Room for the header up front, so the body is one buffer, never copied. */
        out.buf = malloc(64 * 1024);
        out.cap = out.buf ? 64 * 1024 : 0;
        out.len = reserve;
        rc = out.buf ? speak(t, text, canonical, (int)rate, &out, res) : -ENOMEM;
    }
    free(plain);
    if (rc != 0) {
        free(out.buf);
        return rc;
    }
    if (!l16)
        wav_header(out.buf, (uint32_t)(out.len - WAV_HEADER_SIZE), (uint32_t)t->sample_rate);
    return corral_response_set_body(res, content_type, out.buf, out.len, CORRAL_TAKE);
}

/* Copies the single element of a BYTES tensor into a new NUL-terminated string. */
static int bytes_to_string(const corral_tensor *in, char **out, corral_response *res)
{
    size_t off = 0;
    const void *elem;
    uint32_t len;
    if (in->dtype != CORRAL_BYTES || corral_tensor_count(in) != 1 || !corral_bytes_next(in, &off, &elem, &len))
        return corral_bad_request(res, "%s must be a BYTES tensor holding one string", in->name);
    if (!corral_utf8_valid(elem, len) || memchr(elem, '\0', len))
        return corral_bad_request(res, "%s is not UTF-8 text", in->name);
    *out = malloc((size_t)len + 1);
    if (!*out)
        return -ENOMEM;
    memcpy(*out, elem, len);
    (*out)[len] = '\0';
    return 0;
}

static int tts_infer(void *state, const corral_request *req, corral_response *res)
{
    tts *t = state;
    const corral_tensor *text_in = corral_request_input(req, "TEXT");
    const corral_tensor *voice_in = corral_request_input(req, "VOICE");
    char *text = NULL, *voice = NULL;
    const char *canonical;
    int64_t rate = corral_param_int(corral_request_parameters(req), "rate", t->default_rate);
    pcm out = {0};
    int rc;

    if (!text_in)
        return corral_bad_request(res, "input TEXT (BYTES, shape [1]) is required");
    rc = bytes_to_string(text_in, &text, res);
    if (rc == 0 && voice_in)
        rc = bytes_to_string(voice_in, &voice, res);
    if (rc == 0)
        rc = check_args(t, text, strlen(text), voice ? voice : t->default_voice, rate, &canonical, res);
    if (rc == 0)
        rc = speak(t, text, canonical, (int)rate, &out, res);
    free(text);
    free(voice);
    if (rc != 0) {
        free(out.buf);
        return rc;
    }

    int64_t samples[1] = {(int64_t)(out.len / 2)};
    int64_t one[1] = {1};
    int32_t sample_rate = t->sample_rate;
    /* espeak's samples were stored little-endian: they are the INT16 tensor as is. */
    rc = corral_response_add_output(res, "AUDIO", CORRAL_INT16, samples, 1, out.buf, out.len, CORRAL_TAKE);
    if (rc == 0)
        rc = corral_response_add_output(res, "SAMPLE_RATE", CORRAL_INT32, one, 1, &sample_rate,
                                        sizeof sample_rate, CORRAL_COPY);
    return rc;
}

/* ---- lifecycle ---- */

static void tts_free(tts *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->nvoices; i++)
        free(t->voices[i]);
    free(t->voices);
    free(t->suggestion);
    pthread_mutex_destroy(&t->lock);
    free(t);
}

static int tts_load(corral_ctx *ctx, void **state)
{
    const char *data_dir = corral_ctx_param_string(ctx, "espeak_data", NULL);
    const char *want_voice = corral_ctx_param_string(ctx, "default_voice", "en");
    int64_t rate = corral_ctx_param_int(ctx, "default_rate", DEFAULT_RATE);
    espeak_ng_ERROR_CONTEXT ectx = NULL;
    char why[256];
    int rc;

    tts *t = calloc(1, sizeof *t);
    if (!t)
        return corral_ctx_error(ctx, "MemoryError", "out of memory");
    pthread_mutex_init(&t->lock, NULL);

    espeak_ng_InitializePath(data_dir);
    espeak_ng_STATUS st = espeak_ng_Initialize(&ectx);
    if (st == ENS_OK)
        st = espeak_ng_InitializeOutput(ENOUTPUT_MODE_SYNCHRONOUS, 0, NULL);
    if (st != ENS_OK) {
        espeak_ng_GetStatusCodeMessage(st, why, sizeof why);
        espeak_ng_ClearErrorContext(&ectx);
        rc = corral_ctx_error(ctx, "EspeakError", "cannot initialise espeak-ng (data in %s): %s",
                              data_dir ? data_dir : "the default location", why);
        goto fail;
    }
    t->sample_rate = espeak_ng_GetSampleRate();
    espeak_SetSynthCallback(on_samples);

    rc = collect_voices(t);
    if (rc < 0) {
        rc = corral_ctx_error(ctx, "EspeakError", "espeak-ng lists no voices: %s", strerror(-rc));
        goto fail;
    }
    const char *voice = find_voice(t, want_voice);
    if (!voice) {
        rc = corral_ctx_error(ctx, "ValueError", "parameter default_voice: unknown voice '%s'; valid voices include %s",
                              want_voice, t->suggestion);
        goto fail;
    }
    if (rate < RATE_MIN || rate > RATE_MAX) {
        rc = corral_ctx_error(ctx, "ValueError", "parameter default_rate must be between %d and %d, not %lld",
                              RATE_MIN, RATE_MAX, (long long)rate);
        goto fail;
    }
    if (espeak_SetVoiceByName(voice) != EE_OK) {
        rc = corral_ctx_error(ctx, "EspeakError", "espeak-ng cannot load voice '%s'", voice);
        goto fail;
    }
    t->default_voice = (char *)voice;
    t->default_rate = (int)rate;

    int64_t one[1] = {1}, any[1] = {-1};
    if (corral_ctx_add_input(ctx, "TEXT", CORRAL_BYTES, one, 1) < 0 ||
        corral_ctx_add_optional_input(ctx, "VOICE", CORRAL_BYTES, one, 1) < 0 ||
        corral_ctx_add_output(ctx, "AUDIO", CORRAL_INT16, any, 1) < 0 ||
        corral_ctx_add_output(ctx, "SAMPLE_RATE", CORRAL_INT32, one, 1) < 0) {
        rc = corral_ctx_error(ctx, "MemoryError", "out of memory");
        goto fail;
    }
    corral_log("tts-espeak: espeak-ng ready at %d Hz, %zu voice names, default voice %s at %d wpm",
               t->sample_rate, t->nvoices, t->default_voice, t->default_rate);
    *state = t;
    return 0;
fail:
    espeak_Terminate();
    tts_free(t);
    return rc;
}

static void tts_unload(void *state)
{
    espeak_Terminate();
    tts_free(state);
}

int main(void)
{
    static const corral_model_ops ops = {
        .load = tts_load,
        .infer = tts_infer,
        .generate = tts_generate,
        .unload = tts_unload,
    };
    return corral_run(&ops);
}
