"""The survivors already explained: equivalent mutants (left out of the score) and accepted
ones (counted against it), each with why, keyed by short names such as 'predictor:_run#3'."""

from __future__ import annotations

from benchmarks.mutation.modules import MODULES

# Mutants that change nothing observable: short name -> why. A short name is the MODULES key,
# the function and mutmut's number; mutmut_name turns it into mutmut's name, whose module part
# follows the module's installed path (a move re-keys every entry). Numbers are stable for a given
# source file; after an edit of the module, rerun and re-check the list (the driver reports a
# listed name that no longer survives, and a survivor that is not listed).
EQUIVALENT_BY_SHORT_NAME: dict[str, str] = {
    "checkpoint:_manager#16": "enable_async_checkpointing=True: save() calls "
    "wait_until_finished() at once, so the step is final before the pointer is written either "
    "way; only the thread that writes it differs",
    "checkpoint:save#7": "stale pointer temp files unlinked with missing_ok=False: each was just "
    "listed by glob; it differs only if another process deletes it in between",
    "checkpoint:save#22": "manager.save(force=None): every step >= epoch was just deleted and "
    "save_interval_steps is Orbax's default 1, so should_save(epoch) is true and it saves anyway",
    "checkpoint:save#25": "manager.save without force: as #22",
    # Found by a run of all 388 (`--sample 1`), outside the 1-in-3 sample:
    "checkpoint:_host_int#2": "addressable_data(None): a scalar step is always fully replicated, "
    "and jax's addressable_data ignores the index of a fully replicated array",
    "checkpoint:_host_int#3": "addressable_data(1): as #2",
    "checkpoint:_manager#12": "enable_async_checkpointing left out: True is Orbax's default, "
    "as #16",
    "checkpoint:_manager#17": "item_handlers=None: Orbax takes each item's handler from its args "
    "(StandardSave, JsonSave), the same two handlers",
    "checkpoint:_manager#24": "item_handlers=None: as #17",
    "checkpoint:_manager#27": "item_handlers left out: as #17",
    "checkpoint:check_fit#14": "zip(..., strict=None): both callers build keys and wants from "
    "the same template leaves, one each, so the two never differ in length",
    "checkpoint:check_fit#17": "zip without strict: as #14",
    "checkpoint:check_fit#18": "zip(..., strict=False): as #14",
    "checkpoint:save#6": "missing_ok=None on a just-globbed temp file: as #7",
    "checkpoint:save#26": "manager.save(force=False): as #22",
    "checkpoint:save#60": "the barrier also in a single process (`>= 1`): with one process "
    "sync_global_devices has no one to wait for and returns",
    "idx:parse_idx#54": "np.prod(dims, dtype=None): numpy's default integer is int64 on "
    "every 64-bit platform numpy 2 supports (only Windows with numpy 1.x had int32, where the "
    "explicit dtype keeps a hostile header's dimensions from overflowing)",
    "idx:parse_idx#56": "np.prod(dims) without dtype: as #54",
    "idx:parse_idx#63": "`<` -> `<=` choosing 'truncated' or 'has trailing bytes': the "
    "line runs only when len(data) != expected, where the two agree",
    "idx:read_maybe_gz#13": "reads cap + 2 bytes instead of cap + 1: `len(data) > cap` "
    "decides the same; one byte more memory",
    "idx:read_maybe_gz#7": "gzip.open(path) without 'rb': 'rb' is its default mode",
    "predictor:Predictor._check_io#63": "fixed batch `> 0` -> `>= 0`: a batch of 0 gives "
    "chunk = 0 or 512 = 512, and `if self._batch` is false, as with None",
    "predictor:Predictor._check_metadata#16": "unparsable labels read as '' instead of None: "
    "both differ from the label list, the same refusal follows",
    "predictor:Predictor._check_metadata#8": "the separator between known specs: "
    "contract.KNOWN_PREPROCESSING_SPECS holds one spec, so none is printed (the message test "
    "joins them with ', ', so a second spec makes this mutant killable)",
    "predictor:Predictor._probe#26": "`> 0.05` -> `>= 0.05` on |sum - 1|: a float32 sum widened "
    "to double is never exactly 0.95 or 1.05, so the two never disagree",
    "predictor:Predictor._run#20": "np.asarray(probs, None): _check_io admits only tensor(float) "
    "outputs, which onnxruntime returns as float32 already",
    "predictor:Predictor._run#22": "np.asarray(probs): as #20",
    "predictor:Predictor._run#3": "pad when n <= batch: for n == batch the pad is zero rows, the "
    "concatenation changes nothing",
    "predictor:Predictor.predict_batch#17": "dtype kinds 'buif' -> 'XXbuifXX': numpy has no "
    "dtype kind 'X'",
    "preprocess:_from_editor#57": "the padding of a smaller layer made with Pillow's default "
    "colour, which for RGBA is (0, 0, 0, 0), the value written out",
    "preprocess:_from_editor#61": "padding (0, 1, 0, 0) instead of (0, 0, 0, 0): alpha 0, and "
    "alpha_composite ignores the colour of a fully transparent pixel",
    "preprocess:_from_editor#65": "paste(layer, None): Pillow pastes at (0, 0) when no box is "
    "given",
    "preprocess:_from_pil#45": "mode 'L' sent by way of RGB: L -> RGB -> L is lossless",
    "preprocess:_from_pil#49": "modes '1' and 'RGB' sent by way of RGB: '1' -> RGB -> L gives the "
    "same 0/255 as '1' -> L, and RGB -> RGB is a copy",
    "preprocess:_to_mnist#45": "the centre used when the resized crop is blank: a blank patch "
    "placed anywhere is the same blank image",
    "preprocess:_to_uint8#105": "no lower clip: blocks are at least -1e-6 * 255, rint makes "
    "them -0.0, stored as 0",
    "preprocess:_to_uint8#113": "clip at 256: blocks are at most 255 * (1 + 1e-6), rint makes "
    "them 255",
    "preprocess:_to_uint8#117": "np.rint into a new array instead of in place: the same values, "
    "one temporary more",
    "preprocess:_ink_box#9": "max(..., default=1): the default is used only for an image with no "
    "pixels, which check_size refuses before",
    "preprocess:_ink_box#13": "the minimum peak 63.75 -> 64.0: peaks are integers, and no "
    "integer lies in [63.75, 64)",
    "preprocess:_ink#29": "max(255 - bg, 2) in the light-ink branch: there bg < 128, so "
    "255 - bg is at least 128 and the max never picks the constant",
    "preprocess:_ink#33": "no upper clip at 1: contrast is at most 1 (0 or 255 against the "
    "background), and (1 - 0.2) / 0.8 is exactly 1 in float32",
    "atomic:write_bytes_atomic#46": "unlink(missing_ok=None) in the failure handler: the temp "
    "file exists whenever the handler runs (mkstemp made it; only the try's last statement "
    "renames it away), so missing_ok is never consulted unless another process deletes it",
    "atomic:write_bytes_atomic#48": "unlink(missing_ok=False): as #46",
    "atomic:write_json_atomic#8": "sort_keys=None: json.dumps treats it as False, its default",
    "atomic:write_json_atomic#11": "sort_keys left out: False is json.dumps's default",
    "atomic:write_text_atomic#7": "'UTF-8' for 'utf-8': codec names are case-insensitive",
    "sources:_records_digest#11": "labels.reshape(-2, 1): numpy reads any negative size as "
    "'the rest'",
    "sources:_records_digest#18": "images.reshape(n, -2): as #11",
    "sources:_check_url#11": "a missing hostname read as 'XXXX' instead of '': neither is "
    "localhost nor an IP address, the URL is refused either way",
    "sources:_RestrictedUnpickler.find_class#8": "np.zeros(1) instead of np.zeros(0): any "
    "array's __reduce__ names the same _reconstruct",
    "sources:restricted_loads#7": "encoding 'LATIN1' for 'latin1': codec names are "
    "case-insensitive",
    "sources:from_pickle_gz#13": "pixels left as float64 instead of uint8: encode_idx converts "
    "them to uint8 itself, the IDX bytes are the same",
    "sources:from_pickle_gz#14": "no lower clip at 0: rint(x * 256) of a pixel in [0, 1) is never "
    "negative, and only the sha256-pinned mnist.pkl.gz reaches this line",
    "sources:from_pickle_gz#21": "x * 256 in float32 instead of float64: scaling by a power of "
    "two is exact in either",
    "sources:from_pickle_gz#23": "np.asarray(x): as #21",
    "sources:from_pickle_gz#39": "reshape(-2, 28, 28): numpy reads any negative size as 'the rest'",
    "sources:from_pickle_gz#57": "as #39, for the test images",
    "sources:from_pickle_gz#43": "labels left as int64: encode_idx converts them to uint8, the "
    "IDX bytes are the same",
    "sources:from_pickle_gz#61": "as #43, for the test labels",
}


def mutmut_name(short: str) -> str:
    """'module:function#N' or 'module:Class.method#N' -> mutmut's name of that mutant."""
    module, _, rest = short.partition(":")
    function, _, number = rest.partition("#")
    cls, _, name = function.rpartition(".")
    mangled = f"x\u01c1{cls}\u01c1{name}" if cls else f"x_{name}"
    return f"{MODULES[module].dotted}.{mangled}__mutmut_{number}"


def short_name(mutant: str) -> str:
    """The inverse of mutmut_name."""
    for module, spec in MODULES.items():
        if mutant.startswith(spec.dotted + "."):
            rest = mutant.removeprefix(spec.dotted + ".")
            function, _, number = rest.partition("__mutmut_")
            if function.startswith("x_"):
                function = function[2:]
            else:
                function = ".".join(part for part in function[1:].split("\u01c1") if part)
            return f"{module}:{function}#{number}"
    return mutant


EQUIVALENT = {mutmut_name(k): why for k, why in EQUIVALENT_BY_SHORT_NAME.items()}

# Survivors that change something observable that no promise covers (counted as survivors in
# the score, so they cost points, but explained): mutant name -> why no test pins it.
ACCEPTED_BY_SHORT_NAME: dict[str, str] = {
    "preprocess:_to_uint8#97": "range(0, rows) without the block step: every block is converted "
    "once per row it holds, same values, `step` times the work on arrays over 1M values; time "
    "is guarded by test_preprocess_fuzz's corpus test, left out of the mutation run",
    "preprocess:_resize#5": "Pillow's default filter (bicubic) instead of Lanczos: both are "
    "area-aware anti-aliased resizes, the 28x28 values move by a few levels; no promise names the "
    "kernel, and pinning it would mean a golden image",
}
ACCEPTED = {mutmut_name(k): why for k, why in ACCEPTED_BY_SHORT_NAME.items()}
