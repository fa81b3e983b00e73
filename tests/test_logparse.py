"""Metric lines out of logs, in every style the importer and the command trainer meet."""

import math

from tunelog.logs.parse import LogParser


def test_log_parser_styles():
    p = LogParser()
    assert p.parse_line("2024-01-01 10:00:00 step=5 loss=1.5 lr=1e-4") == (1704103200000, 5, {"loss": 1.5, "lr": 1e-4})
    assert p.parse_line("{'loss': 0.5, 'learning_rate': 2e-05, 'epoch': 0.3}")[2] == {
        "loss": 0.5,
        "learning_rate": 2e-05,
        "epoch": 0.3,
    }
    assert p.parse_line(" 40%|####      | 40/100 [00:04<00:06, 9.8it/s, loss=0.93, lr=3e-4]")[2] == {
        "loss": 0.93,
        "lr": 3e-4,
    }
    assert p.parse_line("batch 120, loss: 2.25") == (None, 120, {"loss": 2.25})
    assert p.parse_line("Best validation loss: 1.234")[2] == {"best_validation_loss": 1.234}
    assert p.parse_line("loading model from /tmp/x") == (None, None, {})
    assert p.parse_line("steps:  40%|####  | 40/100 [00:04<00:06, 9.8it/s, loss=0.9]") == (None, 40, {"loss": 0.9})
    assert p.parse_line('{"step": 7, "loss": 0.25, "tag": "x"}') == (None, 7, {"loss": 0.25})  # JSON lines too
    assert p.parse_line("iteration #12 validation 5 wer: 0.3") == (None, 12, {"wer": 0.3})
    assert p.parse_line("[2024-01-01 10:00:01] Final eval loss: 1.23") == (
        1704103201000,
        None,
        {"final_eval_loss": 1.23},
    )
    assert p.parse_line("epoch=1 loss=nan")[2]["epoch"] == 1 and math.isnan(p.parse_line("loss=NaN")[2]["loss"])
    # lines of one shape (digits aside) share a parse plan; keys and values still come from each line
    assert p.parse_line("layer3_loss=0.5 step 7")[1:] == (7, {"layer3_loss": 0.5})
    assert p.parse_line("layer4_loss=0.6 step 8")[1:] == (8, {"layer4_loss": 0.6})
    assert p.parse_line("Final top5 acc: 0.91")[2] == {"final_top5_acc": 0.91}
    log = p.parse(["step=10 loss=2.0", "noise", " 3/9 [00:01<00:02, loss=1.5]", "loss=1.0", "Best loss: 0.9"])
    assert log.lines == 5 and log.metric_lines == 4
    assert [(k, v, s) for k, v, s, _ in log.series] == [
        ("loss", 2.0, 10),
        ("loss", 1.5, 11),
        ("loss", 1.0, 12),
        ("best_loss", 0.9, 1),
    ]  # a restarted bar never goes back
    custom = LogParser([r"acc@1 (?P<value>[\d.]+)(?P<key>)"])
    assert custom.parse_line("it 3 acc@1 0.75")[2] == {}  # an empty key group names nothing
    custom = LogParser([r"(?P<key>wer)\s+(?P<value>[\d.]+)%"])
    assert custom.parse_line("dev wer 12.5%")[2] == {"wer": 12.5}
