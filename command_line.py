"""A program's command line read strictly, against its own absl flags only.

tf.app.run tolerated unknown flags: `--logsdir=X` trained into logs/, `-h` started a training.
Here an unknown flag, a stray argument or a value of the wrong type is one line (FCNError),
naming the nearest real flag; -h and --help list the program's flags in the groups of its
source's flag block. Works on absl Flag objects; imports no TensorFlow.
"""
import difflib
import re
import textwrap

from guards import FCNError

HELP_ARGUMENTS = ("-h", "--help", "-help", "--helpfull")
# What a value that does not parse should be, by absl's type name of the flag.
VALUE_KINDS = {"int": "it must be a whole number", "float": "it must be a number",
               "bool": "use true or false"}


class HelpRequest(Exception):
    """-h, --help or --helpfull on the command line; args[0] is the text to print."""


def closest_flag(name, names):
    """The flag name nearest to a mistyped one (difflib's ratio of at least 0.6), or None."""
    match = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    return match[0] if match else None


def _did_you_mean(name, names, value=""):
    nearest = closest_flag(name, names)
    return "; did you mean --%s%s?" % (nearest, value) if nearest else ""


def parse_value(flag, text):
    """text converted by the flag's own absl parser; FCNError when it does not convert."""
    try:
        return flag.parser.parse(text)
    except (ValueError, TypeError):
        raise FCNError("--%s=%s: %s" % (flag.name, text,
                                        VALUE_KINDS.get(flag.flag_type(), "not a valid value")))


def parse(argv, flags, program, defined_in):
    """The settings {flag name: value} that argv (argv[0] the program) asks for: each flag of
    `flags` ({name: absl Flag}) at its default unless given as --name=value, --name value,
    --name or --noname (switches); the last one given wins.

    Raises HelpRequest for -h, --help, --helpfull (the help of the flags that the source file
    `defined_in` defines), and FCNError (one line) for a flag that is not one of these (naming
    the nearest that is), an argument that is not a flag, or a value of the wrong type. Reads
    the definitions only: nothing changes. Whether the values make sense is the program's.
    """
    args = list(argv[1:])
    for arg in args:
        if arg in HELP_ARGUMENTS:
            with open(defined_in, encoding="utf-8") as f:
                groups = flag_groups(f.read())
            raise HelpRequest(help_text(flags, groups, program, full=arg == "--helpfull"))
    names = list(flags)
    switches = [name for name, flag in flags.items() if flag.boolean]
    settings = {name: flag.default for name, flag in flags.items()}
    position = 0
    while position < len(args):
        arg = args[position]
        position += 1
        if not arg.startswith("-") or arg.strip("-") == "":
            name, equals, value = arg.partition("=")
            raise FCNError("unexpected argument '%s': this program takes only flags, "
                           "--name=value%s" % (arg, _did_you_mean(name, names, equals + value)))
        name, equals, value = arg.lstrip("-").partition("=")
        if name in flags:
            flag = flags[name]
            if flag.boolean and not equals:
                settings[name] = True
                continue
            if not equals:
                if position == len(args) or args[position].startswith("--"):
                    raise FCNError("--%s needs a value: --%s=VALUE" % (name, name))
                value = args[position]
                position += 1
            settings[name] = parse_value(flag, value)
        elif name.startswith("no") and name[2:] in switches and not equals:
            settings[name[2:]] = False
        else:
            raise FCNError("unknown flag %s%s (python %s --help lists the flags)"
                           % (arg, _did_you_mean(name, names), program))
    return settings


def flag_groups(source):
    """[(heading, [flag names])] in the order a source text's flag block defines them, under
    its '# ---- heading ----' comments."""
    groups, heading = [], "flags"
    for line in source.splitlines():
        header = re.match(r"# -+ (.+?) -+$", line)
        define = re.match(r'tf\.flags\.DEFINE_\w+\(\s*"(\w+)"', line)
        if header:
            heading = header.group(1)
        elif define:
            if not groups or groups[-1][0] != heading:
                groups.append((heading, []))
            groups[-1][1].append(define.group(1))
    return groups


def _default_text(flag):
    if flag.boolean:
        return "on" if flag.default else "off"
    return "none" if flag.default in (None, "") else str(flag.default)


def help_text(flags, groups, program, full=False):
    """What -h and --help print: the flags by group (name, default, help), flags in no group
    last; --helpfull adds how the command line is read."""
    listed = {name for _, names in groups for name in names}
    others = [name for name in flags if name not in listed]
    groups = list(groups) + ([("other", others)] if others else [])
    lines = ["usage: python %s --flag=value ...   (python %s --mode=train trains)"
             % (program, program)]
    for heading, names in groups:
        lines += ["", heading + ":"]
        for name in names:
            if name not in flags:
                continue
            flag = flags[name]
            spelled = "--%s, --no%s" % (name, name) if flag.boolean else "--%s" % name
            lines.append("  %s  (default: %s)" % (spelled, _default_text(flag)))
            lines += textwrap.wrap(flag.help, 96, initial_indent=" " * 6,
                                   subsequent_indent=" " * 6)
    if full:
        lines += ["", "How the command line is read:"] + textwrap.wrap(
            "A value follows = or comes as the next argument; a switch is turned on by --name "
            "and off by --noname; the last of a flag given twice wins. Anything else is an "
            "error: a flag not listed above (TensorFlow's and absl's own flags, for logging, "
            "testing or TPUs, are not taken: --verbose shows TensorFlow's messages) or an "
            "argument that is not a flag. -h and --help print the flags, --helpfull this too.",
            96, initial_indent="  ", subsequent_indent="  ")
    return "\n".join(lines)
