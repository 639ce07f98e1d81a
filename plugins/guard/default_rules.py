"""The guard's default input rules: attacks on the model itself, in several languages.

Two rules, each a Python regular expression assembled here from readable parts:

- ``prompt_injection``: telling the model to drop what it was told before ("ignore all
  previous instructions", "ignorez les consignes précédentes", "забудь все предыдущие
  инструкции", "忽略之前的所有指令", ...);
- ``system_prompt_exfiltration``: asking it to hand over its hidden instructions ("reveal your
  system prompt", "print the full system instructions", "покажи свой системный промпт", ...).

Patterns are written as a reader would spell the words; literal characters are folded like
the text before matching (see :mod:`plugins.guard.pattern_fold`), so accents, case and
look-alike letters need no alternatives here, and ``\\s*`` between words also matches words
run together. What is deliberately *not* matched: a caller correcting themselves ("ignore my
previous message"), instructions of other things ("ignore the previous step", "show the
system prompt field"), and markup: HTML or JavaScript in a prompt is not an attack on the
model (the output guard is where markup may matter).
"""

# Words in many scripts, look-alikes included, are what this file is about.
# ruff: noqa: RUF001

from __future__ import annotations

__all__ = ["DEFAULT_RULES", "TRIGGERS"]


def _any(*words: str) -> str:
    """A non-capturing alternative of ``words`` (each may hold regex syntax)."""
    return "(?:" + "|".join(words) + ")"


def _words(*words: str) -> str:
    """``_any`` of phrases whose spaces may be any gap, or none."""
    return _any(*(word.replace(" ", r"\s*") for word in words))


_G = r"\s*"  # between two words: one space in folded text, or none at all


def _chars(*words: str) -> str:
    """``_any`` of words of a script written without spaces: a separator between any two of
    their characters folds to a space, so any gap, or none, is allowed there."""
    return _any(*(r"\s*".join(word) for word in words))


def _repeat(*words: str) -> str:
    return "(?:" + _words(*words) + _G + ")*"


def _starts(*groups: tuple[str, ...]) -> tuple[str, ...]:
    """The first words of the phrases in ``groups``: every match of a part begins with one."""
    return tuple(dict.fromkeys(phrase.split(" ")[0] for group in groups for phrase in group))


def _first_chars(*groups: tuple[str, ...]) -> tuple[str, ...]:
    """The first characters of the words in ``groups`` (see :func:`_chars`)."""
    return tuple(dict.fromkeys(word[0] for group in groups for word in group))


# --- prompt injection ------------------------------------------------------------------------

_EN_VERBS = ("ignore", "disregard", "forget", "override", "overlook", "bypass", "discard",
             "abandon", "dismiss", "skip", "set aside", "stop following", "do not follow",
             "don t follow", "never mind")
_EN_VERB = _words(*_EN_VERBS)
_EN_FILLER = _repeat("all", "any", "the", "your", "of", "these", "those", "each", "every",
                     "such")
_EN_BEFORE = _words("previous", "previously given", "prior", "above", "earlier", "preceding",
                    "former", "foregoing", "original", "initial", "old", "past", "existing",
                    "system")
_EN_NOUN = _words("instructions?", "prompts?", "directions?", "rules", "directives?",
                  "guidelines?", "guidance", "constraints", "programming", "orders",
                  "system prompt")
_EN_AFTER = _words("above", "you were given", "you have been given", "given to you",
                   "you received", "so far")
_EN_INJECTION = (
    r"\b" + _EN_VERB + _G + _EN_FILLER + _EN_BEFORE + _G + _EN_NOUN + r"\b"
    + "|" + r"\b" + _EN_VERB + _G + _EN_FILLER + _EN_NOUN + _G + _EN_AFTER + r"\b"
    + "|" + r"\b" + _EN_VERB + _G + r"(?:all\s*)?(?:of\s*)?your" + _G
    + _words("instructions", "rules", "guidelines", "programming", "directives",
             "system prompt", "prompt", "restrictions") + r"\b")

_FR_VERBS = ("ignore", "ignorez", "ignorer", "oublie", "oubliez", "oublier", "neglige",
             "negligez", "outrepasse", "outrepassez", "ne tiens pas compte d",
             "ne tenez pas compte d", "ne tiens plus compte d", "fais abstraction d",
             "faites abstraction d")
_FR_INJECTION = (
    r"\b" + _words(*_FR_VERBS)
    + _G + _repeat("toutes", "tous", "tout", "les", "des", "de", "d", "vos", "tes", "ces",
                   "la", "le", "l", "es")  # "es": "compte d" + "es" is "compte des"
    + _words("instructions?", "consignes?", "directives?", "regles", "indications",
             "ordres", "prompts?", "commandes")
    + _G + _words("precedentes", "anterieures", "ci dessus", "d avant", "initiales",
                  "originales", "recues", "donnees", "systeme", "qu on t a donnees",
                  "qu on vous a donnees")
    + r"\b|\b" + _words("ignore", "ignorez", "oublie", "oubliez") + _G
    + _words("tout ce qui precede", "tout ce qui a ete dit", "tout ce qu on t a dit",
             "tout ce qu on vous a dit") + r"\b")

_DE_VERBS = ("ignoriere", "ignorier", "ignorieren sie", "ignoriert", "vergiss",
             "vergessen sie", "vergesst", "missachte", "missachten sie", "uberschreibe",
             "verwirf", "verwerfen sie", "setze dich uber")
_DE_INJECTION = (
    r"\b" + _words(*_DE_VERBS)
    + _G + _repeat("alle", "all", "die", "deine", "ihre", "samtliche", "jegliche", "den",
                   "der", "diese")
    + _words("vorherigen", "vorigen", "bisherigen", "obigen", "fruheren",
             "vorangegangenen", "vorausgegangenen", "vorhergehenden", "ursprunglichen",
             "alten", "bisher gegebenen", "zuvor gegebenen")
    + _G + _words("anweisungen", "anweisung", "instruktionen", "regeln", "befehle",
                  "vorgaben", "anordnungen", "richtlinien", "prompts?",
                  "systemanweisungen") + r"\b")

_ES_VERBS = ("ignora", "ignore", "ignorad", "ignoren", "olvida", "olvide", "olviden",
             "olvidad", "descarta", "descarte", "omite", "omita", "pasa por alto",
             "haz caso omiso a", "haz caso omiso de", "no hagas caso a", "no hagas caso de",
             "desestima", "esqueca", "desconsidere", "desconsidera")
_ES_INJECTION = (
    r"\b" + _words(*_ES_VERBS)
    + _G + _repeat("todas", "todos", "tutte", "tutti", "las", "los", "le", "gli", "as", "os",
                   "tus", "sus", "de", "a", "cualquier", "qualquer", "le tue")
    + _words("instrucciones", "indicaciones", "directrices", "reglas", "ordenes", "normas",
             "consignas", "istruzioni", "indicazioni", "regole", "instrucoes", "regras",
             "orientacoes", "diretrizes", "prompts?")
    + _G + _words("anteriores", "previas", "precedentes", "precedenti", "de arriba",
                  "originales", "iniciales", "dadas", "recibidas", "sopra", "iniziali",
                  "originais", "iniciais", "del sistema") + r"\b")

_RU_VERBS = ("игнорируй", "игнорируйте", "проигнорируй", "проигнорируйте", "забудь",
             "забудьте", "не обращай внимания на", "не обращайте внимания на", "отбрось",
             "отбросьте", "пренебреги", "пренебрегите", "отмени", "отмените", "не выполняй",
             "не выполняйте", "не следуй", "не следуйте")
_RU_INJECTION = (
    r"\b" + _words(*_RU_VERBS)
    + _G + _repeat("все", "всё", "свои", "твои", "ваши", "эти", "те", "всех", "своих",
                   "твоих", "ваших")
    + _words(r"предыдущ\w*", r"прежн\w*", r"предшествующ\w*", r"вышеуказанн\w*",
             r"вышеперечисленн\w*", r"изначальн\w*", r"исходн\w*", r"первоначальн\w*",
             r"ранее данн\w*", r"ранее полученн\w*", r"данн\w* ранее", r"стар\w*",
             r"системн\w*")
    + _G + _words(r"инструкц\w*", r"указани\w*", r"правил\w*", r"команд\w*",
                  r"директив\w*", r"установк\w*", r"промпт\w*", r"распоряжени\w*")
    + r"\b")

_ZH_VERBS = ("忽略", "忽视", "无视", "無視", "忽視", "不要理会", "不用理会", "不要理會",
             "不理会", "忘记", "忘記", "忘掉", "忘了", "抛开", "拋開", "丢弃", "丟棄", "放弃",
             "放棄", "跳过", "跳過", "别管", "別管", "不要遵守", "不要遵循", "停止遵循")
_JA_BEFORE = ("以前", "前", "これまで", "上記", "先", "最初")
_ZH_INJECTION = (
    _chars(*_ZH_VERBS)
    + _G + r"(?:你|您)?" + _G + _chars("所有", "全部", "一切") + "?" + _G + r"(?:的)?" + _G
    + _chars("之前", "以前", "先前", "此前", "前面", "上面", "上述", "以上", "早先", "原来",
           "原來", "原先", "最初", "原有", "系统", "系統")
    + _G + r"(?:的)?" + _G + _chars("所有", "全部", "一切") + "?" + _G + r"(?:的)?" + _G
    + _chars("指令", "指示", "说明", "說明", "规则", "規則", "提示词", "提示詞", "提示",
           "命令", "设定", "設定", "要求", "限制", "约束", "約束")
    + "|" + _chars(*_JA_BEFORE) + _G + "の" + _G
    + _chars("指示", "命令", "指令", "ルール", "プロンプト", "設定")
    + _G + r"(?:を|は)?" + _G + _chars("すべて", "全て", "全部") + "?" + _G
    + _chars("無視", "忘れ"))

_AR_VERBS = ("تجاهل", "تجاهلي", "تجاهلوا", "انس", "انسى", "انسي", "أهمل", "اهمل", "تخط")
_AR_INJECTION = (
    _words(*_AR_VERBS)
    + _G + r"(?:(?:كل|جميع|كافة)\s*)?"
    + _words("التعليمات", "تعليمات", "الأوامر", "أوامر", "الإرشادات", "التوجيهات", "القواعد")
    + _G + _words("السابقة", "الماضية", "الأصلية", "الأولى", "السابقه", "أعلاه"))

# --- system prompt exfiltration ----------------------------------------------------------------

_EN_STRONGS = ("reveal", "leak", "dump", "disclose", "expose", "divulge", "exfiltrate", "spill",
               "unveil")
_EN_STRONG = _words(*_EN_STRONGS)
_EN_ASKS = ("show", "print", "display", "repeat", "output", "tell", "give", "share", "write out",
            "write", "paste", "recite", "list", "return", "echo", "type out", "read out",
            "copy", "send", "provide", "spell out", "reproduce")
_EN_ASK = _words(*_EN_ASKS)
_EN_WHAT = ("what", "which")
_EN_QUAL = _words("full", "entire", "whole", "complete", "exact", "initial", "original",
                  "hidden", "secret", "current", "internal", "underlying", "actual", "real",
                  "verbatim", "confidential", "private")
_EN_SYSTEM = _words("system prompt", "system message", "system instructions?",
                    "system rules", "developer message", "developer prompt",
                    "developer instructions", "pre prompt", "preprompt", "meta prompt")
_EN_NOUN_SECRET = _words("instructions", "prompt", "guidelines", "directives")
_EN_TO_ME = r"(?:(?:to\s*)?(?:me|us)\s*)?"
_EN_ME = r"(?:(?:me|us|back|out)\s*)*"
_EN_QUALS = "(?:" + _EN_QUAL + _G + ")*"
_EN_SOME_QUALS = "(?:" + _EN_QUAL + _G + ")+"
_EN_EXFILTRATION = "|".join(r"\b" + part + r"\b" for part in (
    _EN_STRONG + _G + _EN_TO_ME + _words("your", "its") + _G + _EN_QUALS
    + _any(_EN_SYSTEM, _EN_NOUN_SECRET),
    _EN_STRONG + _G + _EN_TO_ME + "the" + _G + _EN_QUALS + _EN_SYSTEM,
    _EN_STRONG + _G + _EN_TO_ME + "the" + _G + _EN_SOME_QUALS + _EN_NOUN_SECRET,
    _EN_ASK + _G + _EN_ME + "your" + _G + _EN_QUALS + _EN_SYSTEM,
    _EN_ASK + _G + _EN_ME + "the" + _G + _EN_SOME_QUALS + _EN_SYSTEM,
    _EN_ASK + _G + _EN_ME + "your" + _G + _EN_SOME_QUALS + _EN_NOUN_SECRET,
    _EN_ASK + _G + _EN_ME + "your" + _G + _EN_NOUN_SECRET + _G
    + _words("verbatim", "word for word", "in full", "exactly"),
    _words(*_EN_WHAT) + _G + _words("is", "are", "was", "were", "s") + _G + "your"
    + _G + _EN_QUALS + _any(_EN_SYSTEM, _words("instructions", "initial prompt",
                                               "hidden prompt")),
))

# Verbs that only make sense as exfiltration ("reveal") take any article; verbs of everyday
# requests ("show", "print") need a possessive: "show me your system prompt" is an attack,
# "show the system prompt field" is a question about a user interface.
_FR_STRONG = ("revele", "revelez", "reveler", "devoile", "devoilez", "divulgue", "divulguez")
_FR_ASKS = ("montre", "montrez", "affiche", "affichez", "donne", "donnez", "imprime",
            "imprimez", "repete", "repetez", "ecris", "ecrivez", "dis", "dites", "communique",
            "communiquez", "recopie", "recopiez", "partage", "partagez", "quel est",
            "quelles sont", "quel etait")
_FR_YOUR = ("ton", "votre")
_FR_NOUN = (r"(?:(?:" + _words("texte", "contenu") + r")\s*(?:du|de|des)\s*)?"
            + "(?:" + _words("prompt", "invite", "message", "instructions?", "consignes?",
                             "directives?", "regles") + ")"
            + _G + _words("systeme", "du systeme", "de systeme", "initiales?", "initial",
                          "cachees?", "cache", "secretes?", "secret", "d origine",
                          "originales?", "original", "completes?", "complet", "internes?"))
_FR_EXFILTRATION = (
    r"\b" + _words(*_FR_STRONG) + _G + r"(?:(?:moi|nous)\s*)?"
    + _words("ton", "ta", "tes", "votre", "vos", "le", "la", "les") + _G + _FR_NOUN + r"\b"
    + r"|\b" + _words(*_FR_ASKS) + _G + r"(?:(?:moi|nous)\s*)?"
    + _words("ton", "ta", "tes", "votre", "vos") + _G + _FR_NOUN + r"\b"
    + r"|\b" + _words(*_FR_YOUR) + _G + _words("prompt systeme", "message systeme")
    + _G + _words("complet", "en entier", "mot pour mot") + r"\b")

_DE_STRONG = ("verrate", "verraten sie", "offenbare", "offenbaren sie", "enthulle",
              "enthullen sie")
_DE_ASKS = ("zeige", "zeig", "zeigen sie", "gib", "geben sie", "nenne", "nennen sie",
            "wiederhole", "wiederholen sie", "drucke", "schreibe", "schreib", "teile",
            "gib aus", "was ist", "was sind", "wie lautet", "wie lauten")
_DE_NOUN = (
    "(?:" + _words("vollstandigen", "kompletten", "gesamten", "geheimen", "versteckten",
                   "ursprunglichen", "ersten", "internen", "initialen", "genauen") + _G + ")*"
    + _words("systemprompt", "system prompt", "systemanweisungen", "systemanweisung",
             "systemnachricht", "systeminstruktionen", "systemvorgaben",
             "geheimen anweisungen", "versteckten anweisungen",
             "ursprunglichen anweisungen", "initialen anweisungen"))
_DE_EXFILTRATION = (
    r"\b" + _words(*_DE_STRONG) + _G + r"(?:(?:mir|uns)\s*)?"
    + _words("deinen", "deine", "dein", "ihren", "ihre", "ihr", "den", "die", "das") + _G
    + _DE_NOUN + r"\b"
    + r"|\b" + _words(*_DE_ASKS) + _G + r"(?:(?:mir|uns)\s*)?"
    + _words("deinen", "deine", "dein", "ihren", "ihre", "ihr") + _G + _DE_NOUN + r"\b")

# Spanish, with Italian and Portuguese alongside.
_ES_STRONG = ("revela", "revelame", "filtra", "divulga", "rivela", "rivelami", "revele",
              "divulgue")
_ES_ASKS = ("muestra", "muestrame", "ensename", "ensena", "dime", "imprime", "repite",
            "escribe", "escribeme", "comparte", "dame", "cual es", "cuales son", "mostra",
            "mostrami", "dimmi", "stampa", "mostre", "diga", "qual e")
_ES_YOUR = r"(?:(?:il|le|o|os|a|as)\s*)?(?:tu|tus|su|sus|tuo|tuoi|tue|seu|seus|sua|suas)\s*"
_ES_NOUN = _words("prompt del sistema", "prompt de sistema", "prompt di sistema",
                  "prompt do sistema", "mensaje del sistema", "mensaje de sistema",
                  "instrucciones del sistema", "instrucciones de sistema",
                  "istruzioni di sistema", "instrucoes do sistema", "prompt inicial",
                  "prompt iniziale", "instrucciones iniciales", "instrucciones ocultas",
                  "instrucciones secretas", "instrucciones originales",
                  "istruzioni nascoste", "istruzioni segrete", "istruzioni iniziali",
                  "instrucoes iniciais", "instrucoes ocultas", "instrucoes secretas")
_ES_EXFILTRATION = (
    r"\b" + _words(*_ES_STRONG) + _G + r"(?:(?:me|nos)\s*)?"
    + _repeat("tu", "tus", "el", "la", "los", "las", "su", "sus", "il", "tuo", "tuoi", "le",
              "tue", "seu", "seus", "o", "os", "as") + _ES_NOUN + r"\b"
    + r"|\b" + _words(*_ES_ASKS) + _G + r"(?:(?:me|nos)\s*)?" + _ES_YOUR + _ES_NOUN + r"\b")

_RU_ASKS = ("покажи", "покажите", "раскрой", "раскройте", "выведи", "выведите", "напечатай",
            "напечатайте", "повтори", "повторите", "перескажи", "сообщи", "скажи", "скажите",
            "назови", "распечатай", "процитируй", "выдай", "дай", "дайте", "слей", "какой",
            "какие", "каков", "каковы", "напиши", "напишите")
_RU_EXFILTRATION = (
    r"\b" + _words(*_RU_ASKS)
    + _G + r"(?:(?:мне|нам)\s*)?"
    + r"(?:(?:свой|свою|свои|твой|твою|твои|ваш|вашу|ваши|весь|всю|все|у тебя|у вас)\s*)*"
    + r"(?:(?:полн\w*|точн\w*|скрыт\w*|секретн\w*)\s*)?"
    + _words(r"системн\w* промпт\w*", r"системн\w* промт\w*", r"системн\w* подсказк\w*",
             r"системн\w* инструкц\w*", r"системн\w* сообщени\w*",
             r"системн\w* указани\w*", r"скрыт\w* инструкц\w*", r"исходн\w* инструкц\w*",
             r"изначальн\w* инструкц\w*", r"первоначальн\w* инструкц\w*",
             r"секретн\w* инструкц\w*")
    + r"\b")

_ZH_ASKS = ("显示", "顯示", "输出", "輸出", "打印", "告诉我", "告訴我", "透露", "泄露", "洩露",
            "重复", "重複", "给我看", "給我看", "展示", "说出", "說出", "公开", "公開", "披露",
            "复述", "複述", "列出", "发给我", "發給我", "写出", "寫出")
_ZH_YOUR = ("你", "您")
_JA_SYSTEM = ("システムプロンプト",)
_ZH_EXFILTRATION = (
    _chars(*_ZH_ASKS)
    + _G + _chars("一下") + "?" + _G + r"(?:你|您)?" + _G + r"(?:的)?" + _G
    + "(?:" + _chars("完整", "全部", "原始", "隐藏", "隱藏", "初始", "秘密", "内部", "內部")
    + _G + "(?:的)?)?" + _G
    + _chars("系统提示词", "系統提示詞", "系统提示", "系統提示", "系统指令", "系統指令",
           "系统消息", "系統消息", "系统设定", "系統設定", "初始指令", "原始指令", "隐藏指令",
           "隱藏指令", "系统说明", "系統說明")
    + "|" + _chars(*_ZH_YOUR) + _G + "的" + _G
    + _chars("系统提示词", "系統提示詞", "系统提示", "系統提示", "系统指令", "系統指令",
           "初始指令", "原始指令") + _G + _chars("是什么", "是什麼")
    + "|" + _chars(*_JA_SYSTEM) + _G + r"(?:を|は)?" + _G
    + _chars("表示", "教え", "出力", "見せ", "開示", "繰り返"))

_AR_ASKS = ("اكشف", "اكشفي", "أظهر", "اظهر", "اعرض", "اطبع", "أعطني", "اعطني", "كرر",
            "ما هي", "ما هو")
_AR_EXFILTRATION = (
    _words(*_AR_ASKS)
    + _G + r"(?:لي\s*)?"
    + _words("تعليمات النظام", "موجه النظام", "رسالة النظام", "التعليمات الأصلية",
             "تعليماتك الأصلية", "تعليماتك السرية", "التعليمات المخفية", "تعليماتك المخفية"))

_INJECTION = "|".join([_EN_INJECTION, _FR_INJECTION, _DE_INJECTION, _ES_INJECTION,
                       _RU_INJECTION, _ZH_INJECTION, _AR_INJECTION])
_EXFILTRATION = "|".join([_EN_EXFILTRATION, _FR_EXFILTRATION, _DE_EXFILTRATION,
                          _ES_EXFILTRATION, _RU_EXFILTRATION, _ZH_EXFILTRATION,
                          _AR_EXFILTRATION])

#: The defaults of ``guard.rules``: prompt injection and system-prompt exfiltration.
DEFAULT_RULES: list[dict[str, str]] = [
    {"name": "prompt_injection", "pattern": _INJECTION},
    {"name": "system_prompt_exfiltration", "pattern": _EXFILTRATION},
]

#: For each default pattern, the words every one of its matches starts with: those that
#: must start a word (the pattern has ``\b`` before them) and the others (Chinese, Japanese
#: and Arabic, written without a boundary). Searching for these first and trying the whole
#: pattern only where one starts is many times faster than letting ``re`` try some fifty
#: alternatives at every position of the text.
TRIGGERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    _INJECTION: (_starts(_EN_VERBS, _FR_VERBS, _DE_VERBS, _ES_VERBS, _RU_VERBS),
                 _first_chars(_ZH_VERBS, _JA_BEFORE) + _starts(_AR_VERBS)),
    _EXFILTRATION: (_starts(_EN_STRONGS, _EN_ASKS, _EN_WHAT, _FR_STRONG, _FR_ASKS, _FR_YOUR,
                            _DE_STRONG, _DE_ASKS, _ES_STRONG, _ES_ASKS, _RU_ASKS),
                    _first_chars(_ZH_ASKS, _ZH_YOUR, _JA_SYSTEM) + _starts(_AR_ASKS)),
}
