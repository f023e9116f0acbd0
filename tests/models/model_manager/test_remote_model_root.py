"""A model root in S3 (SeaweedFS on loopback): install uploads (multipart for big files, record last), workers
use the files through the host disk cache (one download per host, held while read, LRU eviction, keyed by hash),
checkpoints convert into the cache, and DAG parsing reads records only.

Worker functions are module-level and the module imports nothing heavy: spawned processes import it.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from helpers import sd1_graph
from invokeai_provider.models.model_manager.registry import ModelRegistry

BUCKET = "invokeai-test"

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning")


# --- helpers and fixtures -----------------------------------------------------------------------------


def fresh_root(label: str) -> str:
    return f"s3://{BUCKET}/{label}-{uuid.uuid4().hex[:10]}"


def digests(folder: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under ``folder`` (or of ``folder`` itself when it is a file)."""
    if folder.is_file():
        return {folder.name: hashlib.sha256(folder.read_bytes()).hexdigest()}
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def object_keys(server: Any, root: str) -> list[str]:
    """Every object under an s3:// root, relative to it, straight from the server."""
    prefix = root.removeprefix(f"s3://{BUCKET}/") + "/"
    pages = server.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted(item["Key"][len(prefix):] for page in pages for item in page.get("Contents", []))


def cli(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from invokeai_provider.cli.app import main

    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def count_downloads(registry: ModelRegistry, log: Path, delay: float = 0.0) -> None:
    """Makes the registry's backend append one line per object download to ``log`` (across processes)."""
    download = registry.backend.download_file

    def counted(key: str, local_path: Any) -> None:
        with open(log, "a") as handle:
            handle.write(f"{os.getpid()} {key}\n")
        time.sleep(delay)  # a slow network, so the other processes arrive while the first one downloads
        download(key, local_path)

    registry.backend.download_file = counted  # type: ignore[method-assign]


def connection_env(server: Any) -> str:
    return json.dumps({"conn_type": "aws", "login": server.access_key, "password": server.secret_key,
                       "extra": {"endpoint_url": server.endpoint_url, "region_name": "us-east-1"}})


@pytest.fixture(scope="module")
def s3_env(seaweed_s3: Any) -> Iterator[Any]:
    """The ``invokeai_s3`` connection points at the test server; big files go up in 32 MiB parts."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW_CONN_INVOKEAI_S3", connection_env(seaweed_s3))
        patch.setenv("AIRFLOW__INVOKEAI__S3_MULTIPART_THRESHOLD_MB", "32")
        yield seaweed_s3


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from invokeai_provider.models.testing.tiny import build_sd_model

    return build_sd_model("sd-1", tmp_path_factory.mktemp("sd") / "tiny-sd1")


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from invokeai_provider.models.testing.tiny import build_sd_model

    return build_sd_model("sd-1", tmp_path_factory.mktemp("ckpt") / "tiny-sd1.safetensors", layout="single_file")


@pytest.fixture(scope="module")
def s3_sd(s3_env: Any, tiny_sd: Path) -> tuple[str, Any]:
    """The tiny SD1.5 folder installed into its own S3 root through the CLI: (root URI, its record)."""
    from invokeai_provider.cli.app import main

    root = fresh_root("sd")
    assert main(["models", "install", str(tiny_sd), "--name", "tiny-sd1", "--model-root", root]) == 0
    [config] = ModelRegistry(root).all()
    return root, config


@pytest.fixture(scope="module")
def s3_checkpoint(s3_env: Any, tiny_checkpoint: Path) -> tuple[str, Any]:
    from invokeai_provider.models.model_manager.install import install_model

    root = fresh_root("ckpt")
    return root, install_model(ModelRegistry(root), str(tiny_checkpoint), name="tiny-ckpt")


def generate(registry: ModelRegistry, model: str, artifacts: Path) -> bytes:
    """RGB pixels of a 64x64 text-to-image run in this process with ``registry``'s models."""
    from PIL import Image

    from invokeai_provider.core.context import RunContext
    from invokeai_provider.graph.engine import run_graph
    from invokeai_provider.graph.graph import Graph
    from invokeai_provider.models.model_manager.binding import bind_model_fields
    from invokeai_provider.models.model_manager.manager import ModelManager
    from invokeai_provider.storage.base import LocalArtifactBackend, RunStore

    run = RunContext(store=RunStore(LocalArtifactBackend(artifacts), dag_id="t2i", run_id="r"),
                     services={"models": ModelManager(registry, device="cpu")})
    state = run_graph(Graph.from_dict(bind_model_fields(sd1_graph(model, prompt="a lighthouse at dusk", seed=5, steps=2), registry)), run)
    [image] = state.outputs_of("decode")
    with Image.open(io.BytesIO(run.store.read("images", image.image.image_name))) as png:
        assert png.size == (64, 64)
        return png.convert("RGB").tobytes()


# --- install, list, generate --------------------------------------------------------------------------


def test_install_uploads_the_folder_and_lists_it(s3_env: Any, s3_sd: tuple[str, Any], tiny_sd: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    root, config = s3_sd
    code, out, _ = cli("models", "list", "--model-root", root, capsys=capsys)
    assert code == 0 and out.split()[:4] == ["tiny-sd1", "sd-1", "main", "diffusers"] and config.key in out
    code, out, _ = cli("models", "list", "--json", "--model-root", root, capsys=capsys)
    [record] = json.loads(out)
    assert record["path"] == f"files/{config.key}/tiny-sd1" and not record["installed_in_place"]
    # the folder keeps its structure under files/<key>/; the record sits under records/
    expected = sorted(f"files/{config.key}/tiny-sd1/{name}" for name in digests(tiny_sd))
    assert object_keys(s3_env, root) == expected + [f"records/{config.key}.json"]
    assert config.file_size == sum(p.stat().st_size for p in tiny_sd.rglob("*") if p.is_file())


def test_inplace_into_a_remote_root_is_refused(s3_env: Any, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from invokeai_provider.models.testing.tiny import build_embedding

    root = fresh_root("inplace")
    source = build_embedding("sd-1", tmp_path / "emb.safetensors")
    code, _, err = cli("models", "install", str(source), "--inplace", "--model-root", root, capsys=capsys)
    assert code == 1 and "--inplace" in err and root in err and "without --inplace" in err
    assert object_keys(s3_env, root) == []


def test_s3_root_generates_the_same_pixels_as_a_local_root(s3_sd: tuple[str, Any], tiny_sd: Path,
                                                           tmp_path: Path) -> None:
    from invokeai_provider.models.model_manager.install import install_model

    root, config = s3_sd
    remote = ModelRegistry(root, cache_dir=tmp_path / "cache", cache_bytes=1 << 30)
    local = ModelRegistry((tmp_path / "local").as_uri())
    install_model(local, str(tiny_sd), name="tiny-sd1", inplace=True)

    from_s3 = generate(remote, "tiny-sd1", tmp_path / "a1")
    from_local = generate(local, "tiny-sd1", tmp_path / "a2")
    assert from_s3 == from_local and len(set(from_s3)) > 1  # identical, and not a blank image
    # the model was fetched into the cache with its folder structure, keyed by key and hash
    [entry] = remote.disk_cache.keys()
    assert entry == f"{config.key}-{config.hash.split(':')[1]}"
    assert digests(tmp_path / "cache" / "entries" / entry / "tiny-sd1") == digests(tiny_sd)


# --- one download per host ----------------------------------------------------------------------------


def _fetch_worker(root: str, cache_dir: str, log: str, barrier: Any, results: Any) -> None:
    registry = ModelRegistry(root, cache_dir=cache_dir, cache_bytes=1 << 30)
    count_downloads(registry, Path(log), delay=0.2)
    [config] = registry.all()
    barrier.wait(timeout=60)  # all four ask at the same moment
    with registry.local_model(config) as local:
        results.put(digests(local.path))


def test_four_processes_download_a_model_once(s3_env: Any, s3_sd: tuple[str, Any], tiny_sd: Path,
                                              tmp_path: Path) -> None:
    root, config = s3_sd
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(4), context.Queue()
    log = tmp_path / "downloads.log"
    workers = [context.Process(target=_fetch_worker, args=(root, str(tmp_path / "cache"), str(log), barrier, results))
               for _ in range(4)]
    for worker in workers:
        worker.start()
    seen = [results.get(timeout=180) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    lines = [line.split() for line in log.read_text().splitlines()]
    objects = [k for k in object_keys(s3_env, root) if k.startswith(f"files/{config.key}/")]
    assert sorted(key for _, key in lines) == objects  # every object exactly once...
    assert len({pid for pid, _ in lines}) == 1  # ...by one process
    assert all(files == digests(tiny_sd) for files in seen)  # and all four read the same, complete files
    assert list((tmp_path / "cache" / "staging").iterdir()) == []


# --- eviction -----------------------------------------------------------------------------------------


def _hold_worker(root: str, cache_dir: str, budget: int, key: str, ready: Any, release: Any) -> None:
    registry = ModelRegistry(root, cache_dir=cache_dir, cache_bytes=budget)
    with registry.local_model(registry.get(key)):
        ready.set()
        release.wait(timeout=120)


def test_least_recently_used_models_are_evicted_but_not_one_in_use(s3_env: Any, tmp_path: Path) -> None:
    from invokeai_provider.models.model_manager.install import install_model
    from invokeai_provider.models.testing.tiny import build_embedding

    root = fresh_root("evict")
    registry = ModelRegistry(root)
    configs = {name: install_model(registry, str(build_embedding("sd-1", tmp_path / f"{name}.safetensors", seed=i)),
                                   name=name) for i, name in enumerate("abc")}
    size = configs["a"].file_size
    budget = int(2.5 * size)  # room for two models
    cache = ModelRegistry(root, cache_dir=tmp_path / "cache", cache_bytes=budget)
    log = tmp_path / "downloads.log"
    count_downloads(cache, log)

    def use(name: str) -> None:
        with cache.local_model(configs[name]) as local:
            assert local.path.stat().st_size == size
        time.sleep(0.05)  # distinct last-use times

    def cached() -> set[str]:
        return {n for n, c in configs.items() if cache.cache_key(c) in cache.disk_cache.keys()}

    use("a"), use("b"), use("a")  # b is now the least recently used
    use("c")
    assert cached() == {"a", "c"}

    # another process holds a (the least recently used now) while this one needs room for b
    use("c")
    context = multiprocessing.get_context("spawn")
    ready, release = context.Event(), context.Event()
    holder = context.Process(target=_hold_worker, args=(root, str(tmp_path / "cache"), budget, configs["a"].key,
                                                        ready, release))
    holder.start()
    try:
        assert ready.wait(timeout=120)
        use("b")
        assert cached() == {"a", "b"}  # c went although a was older: a is being read
    finally:
        release.set()
        holder.join(timeout=60)
    assert holder.exitcode == 0
    use("c")  # a is free again and the least recently used
    assert cached() == {"b", "c"}
    downloads = [line.split()[1].split("/")[1] for line in log.read_text().splitlines()]
    key_of = {c.key: n for n, c in configs.items()}
    assert [key_of[k] for k in downloads] == ["a", "b", "c", "b", "c"]  # an evicted model is fetched again


def test_the_manager_holds_a_model_while_it_loads_it(s3_env: Any, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import safetensors.torch

    from invokeai_provider.core.fields import ModelIdentifierField
    from invokeai_provider.models.model_manager.install import install_model
    from invokeai_provider.models.model_manager.manager import ModelManager
    from invokeai_provider.models.testing.tiny import build_embedding

    root = fresh_root("held")
    configs = [install_model(ModelRegistry(root), str(build_embedding("sd-1", tmp_path / f"{n}.safetensors", seed=n)),
                             name=f"emb{n}") for n in (0, 1)]
    budget = int(1.5 * configs[0].file_size)  # room for one
    manager = ModelManager(ModelRegistry(root, cache_dir=tmp_path / "cache", cache_bytes=budget), device="cpu")
    other = ModelRegistry(root, cache_dir=tmp_path / "cache", cache_bytes=budget)  # another worker on the host
    load_file = safetensors.torch.load_file

    def load_while_another_model_comes_in(path: str, *args: Any, **kwargs: Any) -> Any:
        time.sleep(0.05)
        with other.local_model(configs[1]):
            pass  # over budget: it would evict emb0, which the manager is reading
        assert Path(path).is_file()
        return load_file(path, *args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "load_file", load_while_another_model_comes_in)
    with manager.load(ModelIdentifierField(**configs[0].identifier())) as tensors:
        assert tensors["emb_params"].shape == (1, 768)
    assert sorted(other.disk_cache.keys()) == sorted(other.cache_key(c) for c in configs)
    with other.local_model(configs[1]):  # now emb0 is free and the least recently used
        pass
    assert other.disk_cache.keys() == [other.cache_key(configs[1])]


# --- re-install and checkpoints -----------------------------------------------------------------------


def test_a_reinstalled_model_with_a_new_hash_is_fetched_anew(s3_env: Any, tmp_path: Path) -> None:
    from invokeai_provider.models.model_manager.hashing import model_hash
    from invokeai_provider.models.model_manager.install import install_model
    from invokeai_provider.models.testing.tiny import build_lora

    root = fresh_root("reinstall")
    registry = ModelRegistry(root, cache_dir=tmp_path / "cache", cache_bytes=1 << 30)
    old = build_lora("sd-1", tmp_path / "old" / "style.safetensors", seed=0)
    new = build_lora("sd-1", tmp_path / "new" / "style.safetensors", seed=1)
    config = install_model(registry, str(old), name="style")
    log = tmp_path / "downloads.log"
    count_downloads(registry, log)
    with registry.local_model(registry.find("style")) as local:
        assert local.path.read_bytes() == old.read_bytes()

    # the same key re-installed with other weights: new files, then the record with the new hash
    registry.backend.upload_file(config.path, new)
    registry.add(config.model_copy(update={"hash": model_hash(new), "file_size": new.stat().st_size}))
    with registry.local_model(registry.find("style")) as local:
        assert local.path.read_bytes() == new.read_bytes()
    assert len(log.read_text().splitlines()) == 2
    assert len(registry.disk_cache.keys()) == 2 and registry.cache_key(registry.get(config.key)) != \
        registry.cache_key(config)


@pytest.fixture
def tiny_arch_writer(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The bundled architecture configs swapped for the tiny builder's (the tiny checkpoint is not full-size)."""
    from invokeai_provider.models.stable_diffusion import arch_configs
    from invokeai_provider.models.testing import tiny

    written: list[Path] = []

    def write(base: Any, variant: Any, prediction: Any, dest: Path) -> Path:
        written.append(dest)
        return tiny.build_sd_config(base.value, dest, variant=variant.value, prediction_type=prediction.value)

    monkeypatch.setattr(arch_configs, "write_pipeline_config", write)
    return written


def test_a_checkpoint_in_s3_converts_into_the_cache(s3_env: Any, s3_checkpoint: tuple[str, Any], tiny_sd: Path,
                                                     tmp_path: Path,
                                                     tiny_arch_writer: list[Path],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import diffusers
    import torch

    from invokeai_provider.core.fields import ModelIdentifierField
    from invokeai_provider.models.model_manager.manager import ModelManager
    from invokeai_provider.core.taxonomy import SubModelType

    root, config = s3_checkpoint
    before = object_keys(s3_env, root)
    cache_dir = tmp_path / "cache"
    manager = ModelManager(ModelRegistry(root, cache_dir=cache_dir, cache_bytes=1 << 30), device="cpu")
    folder = manager.diffusers_folder(config)
    hex_hash = config.hash.split(":")[1]
    assert folder == cache_dir / "entries" / f"converted-{config.key}-{hex_hash}"
    assert (folder / "model_index.json").is_file() and (folder / "unet" / "config.json").is_file()
    assert [p.parent for p in tiny_arch_writer] == [cache_dir / "configs"]
    assert (cache_dir / "configs" / "sd-1-normal-epsilon" / "model_index.json").is_file()
    assert object_keys(s3_env, root) == before  # nothing written back to S3

    # another process on the host (a fresh manager) finds the conversion done
    monkeypatch.setattr(ModelManager, "_convert", lambda *a: pytest.fail("converted twice"))
    again = ModelManager(ModelRegistry(root, cache_dir=cache_dir, cache_bytes=1 << 30), device="cpu")
    with again.load(ModelIdentifierField(**config.identifier()), SubModelType.UNet) as unet:
        reference = diffusers.UNet2DConditionModel.from_pretrained(tiny_sd, subfolder="unet", local_files_only=True)
        expected, actual = reference.state_dict(), unet.state_dict()
        assert expected.keys() == actual.keys() and all(torch.equal(expected[k], actual[k]) for k in expected)


# --- multipart upload ---------------------------------------------------------------------------------


def test_a_big_file_uploads_in_parts_and_a_failed_upload_is_never_listed(
        s3_env: Any, s3_checkpoint: tuple[str, Any], tiny_checkpoint: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from invokeai_provider.models.model_manager.install import InstallError, install_model

    server = s3_env
    root, config = s3_checkpoint
    parts = -(-tiny_checkpoint.stat().st_size // (32 << 20))
    head = server.client().head_object(Bucket=BUCKET, Key=f"{root.removeprefix(f's3://{BUCKET}/')}/{config.path}")
    assert head["ETag"].strip('"').endswith(f"-{parts}") and parts > 1  # a multipart upload's ETag: <md5>-<parts>

    # a second root, where the connection breaks while the parts go up
    broken_root = fresh_root("broken")
    registry = ModelRegistry(broken_root)
    events = registry.backend.client.meta.events  # type: ignore[attr-defined]
    seen: list[list[str]] = []
    lock = threading.Lock()

    def cut(**_: Any) -> None:
        with lock:
            seen.append([c.name for c in ModelRegistry(broken_root).all()])  # what a worker lists meanwhile
            if len(seen) >= 3:
                raise ConnectionAbortedError("connection cut by the test at part 3")

    events.register("before-call.s3.UploadPart", cut, unique_id="cut-upload")
    try:
        with pytest.raises(InstallError, match="nothing was registered"):
            install_model(registry, str(tiny_checkpoint), name="half")
    finally:
        events.unregister("before-call.s3.UploadPart", unique_id="cut-upload")
    assert len(seen) >= 3 and all(names == [] for names in seen)
    code, out, _ = cli("models", "list", "--model-root", broken_root, capsys=capsys)
    assert code == 0 and out == ""
    prefix = broken_root.removeprefix(f"s3://{BUCKET}/")
    assert object_keys(server, broken_root) == []
    assert server.client().list_multipart_uploads(Bucket=BUCKET, Prefix=prefix).get("Uploads", []) == []


# --- DAG parsing reads records only -------------------------------------------------------------------


def test_model_names_at_parse_time_read_records_only(s3_sd: tuple[str, Any], tmp_path: Path) -> None:
    root, _ = s3_sd
    code = """
import sys
from invokeai_provider.storage import s3
def refuse(*args, **kwargs):
    raise SystemExit("a model file was downloaded at parse time")
s3.S3ArtifactBackend.download_file = refuse
from invokeai_provider.compiler.model_choices import registry_model_names
names = registry_model_names()
print(names("main_model_loader", "model"))
print(sorted(m for m in ("torch", "diffusers", "transformers") if m in sys.modules))
"""
    env = {**os.environ, "AIRFLOW__INVOKEAI__MODEL_ROOT": root,
           "AIRFLOW__INVOKEAI__MODEL_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-2:] == ["['tiny-sd1']", "[]"]
    assert not (tmp_path / "cache").exists()


def test_a_tiny_gguf_t5_goes_up_with_its_tokenizer_config(s3_env: Any, tmp_path: Path) -> None:
    """install-tiny into an S3 root uploads a GGUF T5 encoder's --config (its tokenizer) beside it, and a manager
    reading the root loads tokenizer and quantized encoder from its cached copy."""
    from invokeai_provider.core.taxonomy import SubModelType
    from invokeai_provider.models.model_manager.manager import ModelManager
    from invokeai_provider.models.quantization.gguf import quantized_modules
    from invokeai_provider.models.testing.tiny_flux import t5_tokenizer
    from invokeai_provider.models.testing.tiny_install import install_tiny

    root = fresh_root("t5-gguf")
    config = install_tiny(ModelRegistry(root), "t5_encoder", format="gguf").config
    assert config.config_path and f"{config.config_path}/tokenizer_2/tokenizer.json" in object_keys(s3_env, root)
    manager = ModelManager(ModelRegistry(root), device="cpu")
    with manager.load(config.identifier(), SubModelType.Tokenizer2) as tokenizer:
        assert tokenizer("a fox").input_ids == t5_tokenizer()("a fox").input_ids
    with manager.load(config.identifier(), SubModelType.TextEncoder2) as encoder:
        assert quantized_modules(encoder)
