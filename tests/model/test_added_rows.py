"""Rows of tokens added to the vocabulary cost what those rows cost (model/added_rows.py): a LoRA step with trained
added rows copies no vocabulary x hidden table and forms no gradient of that size, and gives the loss and the
gradients peft's trainable tokens give (the LoRA matrices and the rows), through TRL's fused head and the plain
forward, in a tied head and an untied one."""

from __future__ import annotations

import copy

import pytest

from tests.helpers import LORA, save_base_without_chatml

ALL_OUTPUTS = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")


def lora_model(tmp_path, tied: bool, fit: bool = True):
    """A tiny base grown by ChatML's two tokens, under peft LoRA + trainable tokens, B matrices non-zero (so the A
    matrices get gradients too)."""
    import torch
    from peft import get_peft_model

    from smoldist.config import LoraConfig, ModelConfig
    from smoldist.model.build import build_model, load_tokenizer
    from smoldist.model.lora import peft_config, trainable_token_rows

    base = save_base_without_chatml(tmp_path / "b", embedding_std=0.5, tied=tied)
    cfg = ModelConfig(name_or_path=str(base), chat_template="chatml", dtype="float32")
    tok = load_tokenizer(cfg)
    model = build_model(cfg, tok)
    model = get_peft_model(model, peft_config(LoraConfig(**LORA), trainable_token_rows(model, tok.smoldist_added)))
    torch.manual_seed(1)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.1)
            if "trainable_tokens_delta" in n:
                p.add_(torch.randn_like(p))  # away from their initial copies, so a stale row would show
    return model, len(tok)


def peft_reference(model):
    """The same model on peft's own trainable-tokens path (what smoldist trained with before), fused head added."""
    from trl.trainer.utils import add_fused_lm_head

    ref = copy.deepcopy(model)
    head = ref.get_base_model().get_output_embeddings()
    object.__setattr__(head, "bias", head.token_adapter.base_layer.bias)  # as fit_trainable_tokens exposes it
    add_fused_lm_head(ref.get_base_model(), outputs=ALL_OUTPUTS)
    return ref


def fitted(model):
    from trl.trainer.utils import add_fused_lm_head

    from smoldist.model.lora import fit_trainable_tokens

    fit_trainable_tokens(model)
    add_fused_lm_head(model.get_base_model(), outputs=ALL_OUTPUTS)
    return model


def batch(vocab: int):
    import torch

    torch.manual_seed(2)
    ids = torch.randint(0, vocab - 2, (2, 24))
    ids[:, ::5] = vocab - 1  # <|im_end|> as input and as label
    ids[:, 3::7] = vocab - 2
    labels = ids.clone()
    labels[0, :4] = -100
    return ids, labels


def assert_near(ours, theirs, name: str = "", rel: float = 1e-5) -> None:
    """Largest difference within `rel` of the largest magnitude: fp32 sums in another order, nothing more."""
    err, scale = float((ours - theirs).abs().max()), float(theirs.abs().max())
    assert scale > 0 and err <= rel * scale, (name, err, scale)


def grads(model) -> dict:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("tied", [True, False])
def test_a_step_copies_no_vocabulary_table_and_forms_no_gradient_of_its_size(tmp_path, tied):
    """Every tensor a forward + backward through TRL's fused head creates, recorded at the dispatcher: none has the
    table's shape (vocabulary x hidden, or the old vocabulary x hidden) unless it is a view of a frozen table."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    model, vocab = lora_model(tmp_path, tied)
    fitted(model)
    base = model.get_base_model()
    tables = {base.get_input_embeddings().token_adapter.base_layer.weight}
    if not tied:
        tables.add(base.get_output_embeddings().token_adapter.base_layer.weight)
    hidden = base.config.hidden_size
    shapes = {(vocab, hidden), (hidden, vocab), (vocab - 2, hidden), (hidden, vocab - 2)}
    frozen = {t.untyped_storage().data_ptr() for t in tables}
    made: list[str] = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in tree_flatten(out)[0]:
                copied = isinstance(t, torch.Tensor) and tuple(t.shape) in shapes
                if copied and t.untyped_storage().data_ptr() not in frozen:
                    made.append(f"{func} -> {tuple(t.shape)}")
            return out

    ids, labels = batch(vocab)
    with Record():
        out = model(input_ids=ids, labels=labels, fused_lm_head=True)
        (-out.log_probs.sum()).backward()
    assert made == [], "\n".join(made)
    assert all(t.grad is None and not t.requires_grad for t in tables)
    trained = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is not None]
    assert trained and all("lora_" in n or "trainable_tokens_delta" in n for n in trained)


def ours_and_peft(tmp_path, tied: bool, step):
    """(vocab, labels, [(result, gradients)] for smoldist's rows, then peft's own path): `step(model, ids, labels,
    vocab)` run on the same LoRA model both ways."""
    model, vocab = lora_model(tmp_path, tied)
    ref = peft_reference(model)
    fitted(model)
    ids, labels = batch(vocab)
    return vocab, labels, [(step(m, ids, labels, vocab), grads(m)) for m in (model, ref)]


def fused_step(m, ids, labels, vocab):
    out = m(input_ids=ids, labels=labels, fused_lm_head=True)
    (-out.log_probs.sum() + out.entropy.sum()).backward()  # the entropy's gradient is composed too
    return out


def plain_step(m, ids, labels, vocab):
    import torch.nn.functional as F

    out = m(input_ids=ids).logits
    F.cross_entropy(out[:, :-1].reshape(-1, vocab), labels[:, 1:].reshape(-1)).backward()
    return out.detach()


@pytest.mark.parametrize("tied", [True, False])
def test_fused_head_loss_and_gradients_equal_peft_trainable_tokens(tmp_path, tied):
    import torch

    vocab, labels, ((ours, g_ours), (theirs, g_theirs)) = ours_and_peft(tmp_path, tied, fused_step)
    for field in ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits"):
        torch.testing.assert_close(getattr(ours, field), getattr(theirs, field), rtol=1e-5, atol=1e-5)
    assert torch.equal(ours.is_top1, theirs.is_top1)
    assert (labels[:, 1:] >= vocab - 2).any()
    assert g_ours.keys() == g_theirs.keys() and any("trainable_tokens_delta" in n for n in g_ours)
    for n in g_ours:
        assert g_ours[n].abs().sum() > 0, n
        assert_near(g_ours[n], g_theirs[n], n)


@pytest.mark.parametrize("tied", [True, False])
def test_plain_forward_logits_and_gradients_equal_peft_trainable_tokens(tmp_path, tied):
    """The module forward (generation, eval's loss, a compute_loss_func) gives peft's logits and gradients."""
    import torch

    _, _, ((ours, g_ours), (theirs, g_theirs)) = ours_and_peft(tmp_path, tied, plain_step)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    for n, g in g_ours.items():
        assert_near(g, g_theirs[n], n)


@pytest.mark.parametrize("softcap,bias", [(None, False), (30.0, True)])
def test_log_probs_from_the_old_tokens_and_the_rows_equal_trls_over_the_merged_table(softcap, bias):
    """`log_probs` (the kernel on the frozen old tokens + the k added columns) against TRL's kernel on the merged
    table: every output and the gradients of the hidden states and the rows, with TRL's logit transforms, a bias, the
    vocabulary in several chunks, and targets that are the argmax, old and added."""
    import torch
    from trl.kernels.chunked_logprob import ChunkedLogProbFunction

    from smoldist.model.added_rows import MARK, log_probs

    torch.manual_seed(0)
    vocab, dim, k, n = 300, 16, 3, 40
    table = torch.randn(vocab, dim)  # its last k rows are stale: the trained ones are `rows`
    rows = torch.randn(k, dim, requires_grad=True)
    b = 0.1 * torch.randn(vocab) if bias else None
    targets = torch.randint(0, vocab - k, (n,))
    targets[::3] = vocab - k + torch.arange(len(targets[::3])) % k
    merged = table.index_copy(0, torch.arange(vocab - k, vocab), rows)
    hidden = torch.randn(n, dim)
    hidden[:12] = 2 * merged.detach()[targets[:12]]  # these targets win (logits up to ~70: fp32 steps of ~1e-5)
    args = (0.7, 64, softcap, 1.3, ALL_OUTPUTS)  # temperature, vocabulary chunk, softcap, logit scale, outputs

    results = []
    for ours in (True, False):
        h = hidden.clone().requires_grad_()
        rows.grad = None
        if ours:
            weight = table.detach()
            setattr(weight, MARK, (vocab - k, rows))
            out = log_probs(ChunkedLogProbFunction, h, weight, b, targets, *args)
        else:
            weight = table.index_copy(0, torch.arange(vocab - k, vocab), rows)
            out = ChunkedLogProbFunction.apply(h, weight, b, targets, *args)
        (-out[0].sum() + out[1].sum()).backward()
        results.append((out, h.grad, rows.grad.clone()))
    (ours, h_ours, r_ours), (theirs, h_theirs, r_theirs) = results
    for a, b_ in zip(ours[:4], theirs[:4], strict=True):
        torch.testing.assert_close(a, b_, rtol=1e-5, atol=3e-5)
    assert torch.equal(ours[4], theirs[4])
    assert ours[4][targets >= vocab - k].any() and ours[4][targets < vocab - k].any()
    assert not ours[4].all()
    assert_near(h_ours, h_theirs, "hidden")
    assert_near(r_ours, r_theirs, "rows")


def test_rows_that_are_not_whole_stop_the_step_in_one_line():
    """Under a partitioning engine (ZeRO-3) the rows or the table read outside their module are empty partitions: the
    added columns would vanish from the softmax, so the step stops with a line saying what to use."""
    import torch
    from trl.kernels.chunked_logprob import ChunkedLogProbFunction

    from smoldist.model.added_rows import MARK, log_probs

    table = torch.randn(20, 4)
    for rows in (torch.empty(0), torch.empty(0, 4)):  # ZeRO-3's partition of a parameter: numel 0
        weight = table.detach()
        setattr(weight, MARK, (18, rows))
        with pytest.raises(RuntimeError, match="not whole here"):
            log_probs(ChunkedLogProbFunction, torch.randn(3, 4), weight, None, torch.tensor([1, 2, 19]), 1.0, 8)


def rss_file_mib() -> float:
    import re

    with open("/proc/self/status") as f:
        return int(re.search(r"RssFile:\s+(\d+)", f.read()).group(1)) / 1024


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="/proc and MADV_PAGEOUT are Linux's")
def test_a_replaced_file_mapped_table_leaves_the_process_memory(tmp_path):
    """grow_vocabulary copies a checkpoint's table (mapped from its file) into the grown one: the old table's pages,
    read in by the copy, are dropped (file-backed RSS back down) and still read back intact; anonymous memory is never
    a target."""
    import torch

    from smoldist.model.build import file_mapped, release_file_pages

    n = 64 * 2**20 // 4
    path = tmp_path / "table.bin"
    torch.arange(n, dtype=torch.float32).numpy().tofile(path)
    table = torch.from_file(str(path), shared=False, size=n, dtype=torch.float32)
    before = rss_file_mib()
    assert float(table.sum()) > 0 and rss_file_mib() - before > 48  # the copy's read: ~64 MiB resident
    assert file_mapped(table.data_ptr()) and not file_mapped(torch.zeros(n).data_ptr())
    release_file_pages(table.data_ptr(), table.nbytes)
    assert rss_file_mib() - before < 16
    assert torch.equal(table[:5], torch.arange(5, dtype=torch.float32))
